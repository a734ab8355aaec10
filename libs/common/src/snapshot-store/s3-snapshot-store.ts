import type { Readable } from 'node:stream';
import type * as ClientS3 from '@aws-sdk/client-s3';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import type * as LibStorage from '@aws-sdk/lib-storage';
import { redactSecrets } from '../observability/redact';
import { countBytes } from './byte-counter';
import { assertObjectName, MANIFEST_OBJECT, parseBucketLocation, SNAPSHOT_PREFIX, type SnapshotSource, type SnapshotStore, type SnapshotUpload, snapshotIdOf, snapshotName, type StoredSnapshot } from './snapshot-store';

/**
 * The AWS SDK, loaded the first time an S3 store is made: it costs about 20 MB of resident memory,
 * which a dumper or loader on the fs or nats store (under a 150 MB budget) should not pay.
 */
let awsSdk: { s3: typeof ClientS3; storage: typeof LibStorage } | undefined;
function loadAwsSdk(): { s3: typeof ClientS3; storage: typeof LibStorage } {
  /* eslint-disable @typescript-eslint/no-require-imports -- a lazy load is the point */
  awsSdk ??= { s3: require('@aws-sdk/client-s3') as typeof ClientS3, storage: require('@aws-sdk/lib-storage') as typeof LibStorage };
  /* eslint-enable @typescript-eslint/no-require-imports */
  return awsSdk;
}

export interface S3SnapshotStoreOptions {
  bucket: string;
  /** S3_ENDPOINT, S3_REGION, S3_FORCE_PATH_STYLE; credentials come from the SDK's usual chain. */
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  /** How long a request may wait for its response (see S3_REQUEST_TIMEOUT_MS); tests shorten it. */
  requestTimeoutMs?: number;
}

/**
 * The SDK waits for ever by default: an S3 endpoint that stops answering (a hung proxy, a dropped
 * route) held a dump with its locks on production, or a load with its ACCESS EXCLUSIVE locks on
 * the environment, without end. Each request now fails (ETIMEDOUT, transient: the SDK and then the
 * dump's or load's retries take it) when its response has not begun within this: for an upload
 * part, sending 8 MiB and the answer, so at least about 70 KB/s. A response's body is watched by
 * the loader's stall timer instead (STALL_TIMEOUT_MS), which tells a slow COPY from a dead store.
 */
export const S3_REQUEST_TIMEOUT_MS = 120_000;
const S3_CONNECT_TIMEOUT_MS = 10_000;
/**
 * The bucket check at boot gives up after this (with a warning): an endpoint that does not answer
 * must not hold a dumper or loader from serving /health for the SDK's 3 x 2 minutes.
 */
export const S3_BOOT_CHECK_TIMEOUT_MS = 15_000;

/** Multipart parts in flight per object: memory stays at about partSize x queueSize whatever the size. */
const PART_SIZE = 8 * 1024 * 1024;
const QUEUE_SIZE = 2;

/** An unfinished multipart upload of an object of a snapshot, and when a part of it was last written. */
interface MultipartUpload {
  key: string;
  uploadId: string;
  snapshotId: string;
  lastWrite: Date;
}

function isNotImplemented(error: unknown): boolean {
  const name = (error as { name?: string; Code?: string }).name ?? (error as { Code?: string }).Code;
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return name === 'NotImplemented' || status === 501;
}

/**
 * 403: the credentials may not do this (AccessDenied: a policy without the action, a deny
 * statement). Its error name (the S3 error code), for the report.
 */
function deniedCode(error: unknown): string | undefined {
  const name = (error as { name?: string; Code?: string }).name ?? (error as { Code?: string }).Code;
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (name === 'AccessDenied' || status === 403) return name && name !== 'Error' ? name : 'AccessDenied';
  return undefined;
}

/** ListParts refused (a policy with s3:ListBucketMultipartUploads but not s3:ListMultipartUploadParts). */
class PartsNotListed extends Error {
  constructor(readonly code: string) {
    super(`ListParts: ${code}`);
  }
}

/** Unfinished multipart uploads could not be listed: why, for the retention log. */
interface UploadsNotListed {
  notListed: string;
}

const LIFECYCLE_REMEDY = 'or use a lifecycle rule that aborts incomplete multipart uploads';

/** The SDK's own error (an answer of the service, or a request that failed): it carries `$metadata`. */
function isSdkError(error: unknown): error is Error & { code?: unknown; $fault?: unknown } {
  return error instanceof Error && typeof (error as { $metadata?: unknown }).$metadata === 'object';
}

/**
 * An SDK error as the dumper and loader report it. The SDK's says `The specified bucket does not
 * exist` and no more: no bucket, no key, and no `code` for the failure event. This one names them
 * and carries the S3 error code (NoSuchBucket, AccessDenied, SlowDown) or the network one
 * (ECONNREFUSED) as `code`; the SDK's error stays its cause, and isTransientError reads that (a 5xx
 * or throttling is transient, a missing bucket or a refusal is not). Anything else (the body's own
 * stream failing an upload: a COPY error) passes through as it is.
 */
export function s3Failure(error: unknown, action: string, bucket: string, key?: string): unknown {
  if (!isSdkError(error)) return error;
  const code = typeof error.code === 'string' ? error.code : error.$fault !== undefined && error.name !== 'Error' ? error.name : undefined;
  const what = key ? `${key} in SNAPSHOT_BUCKET ${bucket}` : `SNAPSHOT_BUCKET ${bucket}`;
  // An answer without a body (to a HEAD) has no message of its own: the SDK says UnknownError.
  const why = !code || code === error.message ? error.message : error.message === 'UnknownError' ? code : `${code} (${error.message})`;
  return Object.assign(new Error(`S3 ${action} of ${what} failed: ${why}`, { cause: error }), code ? { code } : {});
}

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string }).name;
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return name === 'NotFound' || name === 'NoSuchKey' || status === 404;
}

/**
 * Snapshots in an S3-compatible bucket: `prod_snapshot_<id>/<file>` keys, streamed up as multipart
 * uploads (a failed upload aborts its parts), the manifest written last.
 */
export class S3SnapshotStore implements SnapshotStore {
  readonly kind = 's3' as const;
  private readonly sdk = loadAwsSdk();
  private readonly client: S3Client;

  constructor(private readonly options: S3SnapshotStoreOptions) {
    const config: S3ClientConfig = {
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.region ? { region: options.region } : {}),
      ...(options.forcePathStyle ? { forcePathStyle: true } : {}),
      requestHandler: { connectionTimeout: S3_CONNECT_TIMEOUT_MS, requestTimeout: options.requestTimeoutMs ?? S3_REQUEST_TIMEOUT_MS, throwOnRequestTimeout: true },
      // The SDK sends `Expect: 100-continue` with every body of 2 MiB and more (each 8 MiB part)
      // and, with a request timeout set, waits that long for the 100 that a proxy or an
      // S3-compatible server may never send: every part then timed out. The body goes at once.
      expectContinueHeader: false,
    };
    this.client = new this.sdk.s3.S3Client(config);
  }

  private get bucket(): string {
    return this.options.bucket;
  }

  locationOf(snapshotId: string): string {
    return `s3://${this.bucket}/${snapshotName(snapshotId)}`;
  }

  begin(snapshotId: string): Promise<SnapshotUpload> {
    const prefix = snapshotName(snapshotId);
    return Promise.resolve({
      location: this.locationOf(snapshotId),
      put: async (name, body) => {
        assertObjectName(name);
        const counted = countBytes(body);
        const key = `${prefix}/${name}`;
        const upload = new this.sdk.storage.Upload({ client: this.client, params: { Bucket: this.bucket, Key: key, Body: counted.stream }, partSize: PART_SIZE, queueSize: QUEUE_SIZE });
        await upload.done().catch((error: unknown) => {
          throw s3Failure(error, 'upload', this.bucket, key);
        });
        return { storedBytes: counted.bytes() };
      },
      commit: async (manifest) => {
        const key = `${prefix}/${MANIFEST_OBJECT}`;
        await this.client.send(new this.sdk.s3.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: manifest, ContentType: 'application/json' })).catch((error: unknown) => {
          throw s3Failure(error, 'PutObject', this.bucket, key);
        });
      },
      abort: () => this.remove(snapshotId).catch(() => undefined),
    });
  }

  async open(location: string): Promise<SnapshotSource> {
    const prefix = snapshotName(parseBucketLocation(location, 's3', this.bucket));
    const read = async (name: string): Promise<Readable> => {
      try {
        const result = await this.client.send(new this.sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: `${prefix}/${name}` }));
        return result.Body as Readable;
      } catch (error) {
        if (isNotFound(error)) throw Object.assign(new Error(`${location}/${name} is not in the bucket`), { code: 'ENOENT', cause: error });
        throw s3Failure(error, 'GetObject', this.bucket, `${prefix}/${name}`);
      }
    };
    const size = async (key: string): Promise<number | undefined> => {
      try {
        return (await this.client.send(new this.sdk.s3.HeadObjectCommand({ Bucket: this.bucket, Key: `${prefix}/${key}` }))).ContentLength;
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw s3Failure(error, 'HeadObject', this.bucket, `${prefix}/${key}`);
      }
    };
    // Not there (yet): an upload still running; the caller decides to retry.
    if ((await size(MANIFEST_OBJECT)) === undefined) throw Object.assign(new Error(`${location} has no manifest in the bucket`), { code: 'ENOENT' });
    return {
      manifest: async () => Buffer.concat(await (await read(MANIFEST_OBJECT)).toArray()),
      storedSize: (name) => {
        assertObjectName(name);
        return size(name);
      },
      open: (name) => {
        assertObjectName(name);
        return read(name);
      },
    };
  }

  private async *keys(prefix: string): AsyncGenerator<{ key: string; modifiedAt: Date }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(new this.sdk.s3.ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token })).catch((error: unknown) => {
        throw s3Failure(error, 'ListObjectsV2', this.bucket);
      });
      for (const object of page.Contents ?? []) {
        if (object.Key) yield { key: object.Key, modifiedAt: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * An incomplete snapshot's modifiedAt is its newest object, or the newest part of an object of it
   * still being uploaded (where the server lists multipart uploads), whichever is later: a dump in
   * progress in another dumper must look busy to retention while one big table is uploaded.
   */
  async list(): Promise<StoredSnapshot[]> {
    const bySnapshot = new Map<string, StoredSnapshot>();
    for await (const { key, modifiedAt } of this.keys(SNAPSHOT_PREFIX)) {
      const [dir, object] = key.split('/', 2);
      const snapshotId = snapshotIdOf(dir);
      if (!snapshotId || !object) continue;
      const entry = bySnapshot.get(snapshotId) ?? { snapshotId, complete: false, modifiedAt: new Date(0) };
      if (object === MANIFEST_OBJECT) entry.complete = true;
      if (modifiedAt > entry.modifiedAt) entry.modifiedAt = modifiedAt;
      bySnapshot.set(snapshotId, entry);
    }
    if ([...bySnapshot.values()].some((s) => !s.complete)) {
      // Not listed (a server without it, a role without s3:ListBucketMultipartUploads): the objects'
      // own times have to do, and retention says it did not check them.
      const uploads = await this.multipartUploads();
      for (const upload of Array.isArray(uploads) ? uploads : []) {
        const entry = bySnapshot.get(upload.snapshotId);
        if (entry && !entry.complete && upload.lastWrite > entry.modifiedAt) entry.modifiedAt = upload.lastWrite;
      }
    }
    return [...bySnapshot.values()];
  }

  /**
   * Unfinished multipart uploads under the snapshots' prefix, or why they could not be listed: a
   * server that cannot (s3rver: NotImplemented), a role that may not (403 AccessDenied, a common
   * minimal policy of Get/Put/DeleteObject and ListBucket). Neither stops retention.
   */
  private async multipartUploads(): Promise<MultipartUpload[] | UploadsNotListed> {
    const uploads: MultipartUpload[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new this.sdk.s3.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: SNAPSHOT_PREFIX, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      } catch (error) {
        if (isNotImplemented(error)) return { notListed: 'this S3 server does not list them (NotImplemented)' };
        const denied = deniedCode(error);
        if (denied) return { notListed: `${denied} (grant s3:ListBucketMultipartUploads, ${LIFECYCLE_REMEDY})` };
        throw s3Failure(error, 'ListMultipartUploads', this.bucket);
      }
      for (const upload of page.Uploads ?? []) {
        const snapshotId = snapshotIdOf((upload.Key ?? '').split('/', 1)[0]);
        if (!snapshotId || !upload.Key || !upload.UploadId) continue;
        let lastWrite: Date;
        try {
          lastWrite = await this.lastPartWrite(upload.Key, upload.UploadId, upload.Initiated ?? new Date(0));
        } catch (error) {
          // Without its parts' times an upload still running in another dumper cannot be told from a dead one.
          if (error instanceof PartsNotListed) return { notListed: `${error.code} to ListParts (grant s3:ListMultipartUploadParts, ${LIFECYCLE_REMEDY})` };
          throw error;
        }
        uploads.push({ key: upload.Key, uploadId: upload.UploadId, snapshotId, lastWrite });
      }
      [keyMarker, uploadIdMarker] = page.IsTruncated ? [page.NextKeyMarker, page.NextUploadIdMarker] : [undefined, undefined];
    } while (keyMarker);
    return uploads;
  }

  private async lastPartWrite(key: string, uploadId: string, initiated: Date): Promise<Date> {
    let newest = initiated;
    let marker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new this.sdk.s3.ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }));
      } catch (error) {
        const denied = deniedCode(error);
        if (denied) throw new PartsNotListed(denied);
        throw s3Failure(error, 'ListParts', this.bucket, key);
      }
      for (const part of page.Parts ?? []) if (part.LastModified && part.LastModified > newest) newest = part.LastModified;
      marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
    } while (marker);
    return newest;
  }

  /**
   * Multipart uploads a killed dumper never finished nor aborted (their parts are stored and billed
   * but belong to no object), once no part was written since `idleSince`. A server that cannot list
   * them, or credentials that may not, is said so in the result; a bucket lifecycle rule
   * (AbortIncompleteMultipartUpload) is the usual remedy there.
   */
  async purgeInterrupted(idleSince: Date): Promise<string[]> {
    const uploads = await this.multipartUploads();
    if (!Array.isArray(uploads)) return [`unfinished multipart uploads not checked: ${uploads.notListed}`];
    let aborted = 0;
    for (const upload of uploads.filter((u) => u.lastWrite < idleSince)) {
      await this.client.send(new this.sdk.s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.uploadId })).catch((error: unknown) => {
        throw s3Failure(error, 'AbortMultipartUpload', this.bucket, upload.key);
      });
      aborted += 1;
    }
    return aborted ? [`${aborted} unfinished multipart upload(s): aborted`] : [];
  }

  async remove(snapshotId: string): Promise<void> {
    const prefix = `${snapshotName(snapshotId)}/`;
    const keys: string[] = [];
    for await (const { key } of this.keys(prefix)) keys.push(key);
    // The manifest first: from then on no loader takes what is left for a snapshot.
    const manifest = `${prefix}${MANIFEST_OBJECT}`;
    if (keys.includes(manifest)) await this.deleteObjects([manifest]);
    const rest = keys.filter((key) => key !== manifest);
    for (let i = 0; i < rest.length; i += 1000) await this.deleteObjects(rest.slice(i, i + 1000));
  }

  /**
   * DeleteObjects answers 200 even when it deleted none of them: each key it refused (AccessDenied,
   * Object Lock, SlowDown, ...) is listed in `Errors`. Unchecked, retention would report a snapshot
   * removed and forget it was ever announced while it still lay in the bucket, complete.
   */
  private async deleteObjects(keys: string[]): Promise<void> {
    const result = await this.client.send(new this.sdk.s3.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } })).catch((error: unknown) => {
      throw s3Failure(error, 'DeleteObjects', this.bucket);
    });
    const refused = result.Errors ?? [];
    if (refused.length === 0) return;
    const [first] = refused;
    const error = new Error(`S3 refused to delete ${refused.length} of ${keys.length} object(s) in bucket ${this.bucket}, the first ${first.Key ?? '?'}: ${first.Code ?? 'error'} (${first.Message ?? 'no message'})`);
    throw first.Code ? Object.assign(error, { code: first.Code }) : error;
  }

  /** Where the bucket is looked for, for messages: S3_ENDPOINT (credentials masked) or the AWS region. */
  private async whereBucket(): Promise<string> {
    if (this.options.endpoint) return `S3_ENDPOINT ${redactSecrets(this.options.endpoint)}`;
    const region = await this.client.config.region().catch(() => undefined);
    return `AWS region ${region ?? '(none set)'}`;
  }

  /**
   * At boot (dumper and loader): HeadBucket. A bucket that does not exist stops the app, named:
   * unchecked, the dumper answered /health and its first dump failed, and a loader never saw a
   * snapshot. Anything else only resolves with a warning to log, and the app starts: a 403 (the
   * policy lacks s3:ListBucket, which both apps' documented policy has; or a bucket of another
   * account), an endpoint that does not answer (the dumps' and loads' retries ride out an S3
   * outage, as they do a database's), an answer HeadBucket cannot tell (a wrong region's 301).
   */
  async checkBucket(): Promise<string | undefined> {
    try {
      await this.client.send(new this.sdk.s3.HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: AbortSignal.timeout(S3_BOOT_CHECK_TIMEOUT_MS) });
      return undefined;
    } catch (error) {
      const name = (error as { name?: string }).name;
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const where = await this.whereBucket();
      if (name === 'NotFound' || name === 'NoSuchBucket' || status === 404) {
        throw Object.assign(
          new Error(`SNAPSHOT_BUCKET ${this.bucket} does not exist at ${where}: db-fanout does not create S3 buckets; make it beforehand, or set SNAPSHOT_BUCKET, S3_ENDPOINT and S3_REGION to where it is`),
          { code: 'NoSuchBucket', cause: error },
        );
      }
      if (status === 403) {
        return `SNAPSHOT_BUCKET ${this.bucket} at ${where} not checked at boot: HeadBucket answered 403 (grant s3:ListBucket on arn:aws:s3:::${this.bucket}, which the dumper and the loader need; or the bucket is another account's, or the credentials are refused); starting anyway`;
      }
      const why = status
        ? `${name ?? 'error'} (HTTP ${status})`
        : name === 'AbortError'
          ? `no answer within ${S3_BOOT_CHECK_TIMEOUT_MS / 1000} s`
          : redactSecrets(error instanceof Error ? error.message : String(error));
      return `SNAPSHOT_BUCKET ${this.bucket} at ${where} not checked at boot: ${why}; starting anyway (dumps and loads retry while S3 is out)`;
    }
  }

  destroy(): void {
    this.client.destroy();
  }
}
