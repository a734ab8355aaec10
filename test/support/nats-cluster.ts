import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort } from './apps';

const NATS_SERVER = process.env.TEST_NATS_SERVER ?? '/usr/sbin/nats-server';

interface Node {
  name: string;
  clientPort: number;
  routePort: number;
  config: string;
  child?: ChildProcess;
}

/**
 * A JetStream cluster of the test's own: three nats-server processes on free loopback ports, each
 * with a config file (written here) routing to the other two, and its own store directory.
 */
export class OwnNatsCluster {
  private readonly dir = mkdtempSync(join(tmpdir(), 'db-fanout-cluster-'));
  private constructor(readonly nodes: Node[]) {}

  static async start(size = 3): Promise<OwnNatsCluster> {
    const nodes: Node[] = [];
    for (let i = 1; i <= size; i += 1) nodes.push({ name: `n${i}`, clientPort: await freePort(), routePort: await freePort(), config: '' });
    const cluster = new OwnNatsCluster(nodes);
    for (const node of nodes) {
      const store = join(cluster.dir, node.name);
      mkdirSync(store);
      node.config = join(cluster.dir, `${node.name}.conf`);
      const routes = nodes.filter((other) => other !== node).map((other) => `"nats-route://127.0.0.1:${other.routePort}"`);
      writeFileSync(
        node.config,
        [
          `server_name: ${node.name}`,
          `listen: 127.0.0.1:${node.clientPort}`,
          `jetstream { store_dir: "${store}" }`,
          `cluster { name: db-fanout-test, listen: 127.0.0.1:${node.routePort}, routes: [${routes.join(', ')}] }`,
        ].join('\n'),
      );
    }
    for (const node of nodes) cluster.spawn(node);
    await cluster.waitForMetaLeader();
    return cluster;
  }

  /** Every node's client URL, as apps get them in NATS_URL. */
  get url(): string {
    return this.nodes.map((node) => `nats://127.0.0.1:${node.clientPort}`).join(',');
  }

  private spawn(node: Node): void {
    node.child = spawn(NATS_SERVER, ['-c', node.config], { stdio: 'ignore' });
  }

  /** JetStream answers (a meta leader is elected) within 20 s, or the cluster did not form. */
  private async waitForMetaLeader(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const nc = await connect({ servers: this.url.split(','), timeout: 1_000 });
        try {
          await (await jetstreamManager(nc, { timeout: 1_000 })).getAccountInfo();
          return;
        } finally {
          await nc.close();
        }
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`the NATS cluster elected no JetStream leader in 20 s: ${String(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /** The node whose name the stream's cluster info gives as leader. */
  node(name: string): Node {
    const node = this.nodes.find((candidate) => candidate.name === name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** `kill -9` of one node; `restart` brings it back with its store. */
  kill(name: string): void {
    this.node(name).child?.kill('SIGKILL');
  }

  restart(name: string): void {
    this.spawn(this.node(name));
  }

  async destroy(): Promise<void> {
    await Promise.all(
      this.nodes.map(
        (node) =>
          new Promise<void>((resolve) => {
            const child = node.child;
            if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
