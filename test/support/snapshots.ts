import type { SnapshotReadyPayload } from '@app/common/contract';
import type { WrittenSnapshot } from '../../apps/dumper/src/snapshot-writer';

/** The `snapshot.ready` a dumper would announce for `written` (without takenAt, as older dumpers did). */
export function readyPayloadOf(written: WrittenSnapshot): SnapshotReadyPayload {
  return {
    snapshotId: written.manifest.snapshotId,
    date: written.manifest.date,
    location: written.location,
    createdAt: written.manifest.createdAt,
    tables: written.manifest.tables.map(({ name, file, rows, bytes, sha256 }) => ({ name, file, rows, bytes, sha256 })),
  };
}
