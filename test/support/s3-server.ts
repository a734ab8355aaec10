import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

// s3rver has no type declarations; only what the tests use is typed here.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require('s3rver') as new (options: Record<string, unknown>) => { run(): Promise<{ port: number }>; close(): Promise<void>; logger: { silent: boolean } };

/** Credentials s3rver accepts; exported for the apps' AWS_* environment in e2e tests. */
export const S3_TEST_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

/** An S3-compatible server of this test's own (npm s3rver) on a free loopback port, data in a temp dir. */
export class OwnS3Server {
  private server?: { close(): Promise<void> };
  private dir?: string;
  endpoint = '';

  async start(): Promise<this> {
    this.dir = mkdtempSync(join(tmpdir(), 's3rver-'));
    const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: this.dir });
    const { port } = await server.run();
    // `silent` quiets only its console transport, which close() removes: a response that ends after
    // close() (a download its client cut) then made winston complain on console.error, and jest
    // fails a file that logs after its tests are done. A silent logger writes nothing, ever.
    server.logger.silent = true;
    this.server = server;
    this.endpoint = `http://127.0.0.1:${port}`;
    return this;
  }

  client(): S3Client {
    return new S3Client({ endpoint: this.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  }

  async createBucket(bucket: string): Promise<void> {
    const client = this.client();
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
    } finally {
      client.destroy();
    }
  }

  /** The environment an app needs to use this server (SNAPSHOT_STORE=s3 and SNAPSHOT_BUCKET aside). */
  env(): Record<string, string> {
    return { S3_ENDPOINT: this.endpoint, S3_FORCE_PATH_STYLE: 'true', ...S3_TEST_CREDENTIALS };
  }

  async stop(): Promise<void> {
    await this.server?.close();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
