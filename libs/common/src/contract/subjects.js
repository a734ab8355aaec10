"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.SUBJECTS = void 0;
exports.streamSubjects = streamSubjects;
exports.SUBJECTS = {
    trigger: 'replication.trigger',
    snapshotReady: 'snapshot.ready',
    snapshotLoaded: 'snapshot.loaded',
    snapshotLoadFailed: 'snapshot.load.failed',
    snapshotFailed: 'snapshot.failed',
};
function streamSubjects(prefix) {
    return [`${prefix}${exports.SUBJECTS.trigger}`, `${prefix}snapshot.>`];
}
//# sourceMappingURL=subjects.js.map