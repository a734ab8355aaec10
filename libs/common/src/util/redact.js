"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.redactSecrets = redactSecrets;
exports.maskUrl = maskUrl;
exports.errorMessage = errorMessage;
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/)([^:/?#@\s]+)(:[^@/\s]*)?@/gi;
const PASSWORD_PAIRS = /\b(password|passwd|pass|pwd|token)=([^\s&;]+)/gi;
function redactSecrets(text) {
    return text
        .replace(URL_CREDENTIALS, (_all, scheme, user, password) => password ? `${scheme}${user}:***@` : `${scheme}${user}@`)
        .replace(PASSWORD_PAIRS, '$1=***');
}
function maskUrl(url) {
    return redactSecrets(url);
}
function errorMessage(error) {
    const text = error instanceof Error ? error.message : String(error);
    return redactSecrets(text);
}
//# sourceMappingURL=redact.js.map