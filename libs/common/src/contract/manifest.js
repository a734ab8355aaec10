"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.SNAPSHOT_DIR_PREFIX = exports.MANIFEST_FILE = void 0;
exports.snapshotDirName = snapshotDirName;
exports.MANIFEST_FILE = 'manifest.json';
exports.SNAPSHOT_DIR_PREFIX = 'prod_snapshot_';
function snapshotDirName(snapshotId) {
    return `${exports.SNAPSHOT_DIR_PREFIX}${snapshotId}`;
}
//# sourceMappingURL=manifest.js.map