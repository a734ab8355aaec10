"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __exportStar = (this && this.__exportStar) || function(m, exports) {
    for (var p in m) if (p !== "default" && !Object.prototype.hasOwnProperty.call(exports, p)) __createBinding(exports, m, p);
};
Object.defineProperty(exports, "__esModule", { value: true });
__exportStar(require("./config/env-reader"), exports);
__exportStar(require("./config/app-config"), exports);
__exportStar(require("./contract/subjects"), exports);
__exportStar(require("./contract/payloads"), exports);
__exportStar(require("./contract/manifest"), exports);
__exportStar(require("./contract/invalid-message.error"), exports);
__exportStar(require("./jetstream/jetstream.constants"), exports);
__exportStar(require("./jetstream/jetstream.context"), exports);
__exportStar(require("./jetstream/jetstream.module"), exports);
__exportStar(require("./jetstream/jetstream.server"), exports);
__exportStar(require("./jetstream/event-publisher"), exports);
__exportStar(require("./jetstream/message-disposition"), exports);
__exportStar(require("./jetstream/stream-setup"), exports);
__exportStar(require("./jetstream/nats-connection"), exports);
__exportStar(require("./health/readiness.service"), exports);
__exportStar(require("./bootstrap/run-app"), exports);
__exportStar(require("./util/dates"), exports);
__exportStar(require("./util/duration"), exports);
__exportStar(require("./util/redact"), exports);
__exportStar(require("./util/retry"), exports);
__exportStar(require("./util/sql"), exports);
__exportStar(require("./streams/digest-stream"), exports);
//# sourceMappingURL=index.js.map