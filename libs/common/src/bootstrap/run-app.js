"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.runApp = runApp;
const common_1 = require("@nestjs/common");
const core_1 = require("@nestjs/core");
const env_reader_1 = require("../config/env-reader");
const jetstream_server_1 = require("../jetstream/jetstream.server");
const redact_1 = require("../util/redact");
async function runApp(definition) {
    const logger = new common_1.Logger(definition.name);
    let config;
    try {
        config = definition.loadConfig();
    }
    catch (error) {
        if (!(error instanceof env_reader_1.ConfigError))
            throw error;
        process.stderr.write(`${definition.name}: ${error.message}\n`);
        process.exit(1);
    }
    try {
        const app = await core_1.NestFactory.create(definition.module(config), { logger: definition.logger, abortOnError: false });
        app.enableShutdownHooks();
        app.connectMicroservice({ strategy: app.get(jetstream_server_1.JetStreamServer) }, { inheritAppConfig: true });
        await app.startAllMicroservices();
        await app.listen(config.http.port, '0.0.0.0');
        logger.log(`${definition.name} ready; /health on port ${config.http.port}`);
    }
    catch (error) {
        logger.error(`${definition.name} failed to start: ${(0, redact_1.errorMessage)(error)}`);
        process.exit(1);
    }
}
//# sourceMappingURL=run-app.js.map