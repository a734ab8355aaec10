import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { DEFAULT_HTTP_PORTS, loadDumperConfig, loadLoaderConfig, loadSchedulerConfig, variablesReadBy } from '@app/common/config';

/**
 * No Docker engine runs here, so the compose file is checked against the code: the services it
 * promises exist, each app runs the built entry point its npm script runs, reads only variables the
 * app knows, gets every required one, and shares the snapshot volume.
 */
const ROOT = join(__dirname, '..');
interface Service {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  container_name?: string;
  profiles?: string[];
}
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
/** The default stack: what `docker compose up` starts (services without a profile). */
const services = Object.fromEntries(Object.entries(compose.services).filter(([, service]) => !service.profiles));
const clusterServices = Object.fromEntries(Object.entries(compose.services).filter(([, service]) => service.profiles?.includes('cluster')));

const apps = {
  scheduler: { load: loadSchedulerConfig, required: [] as string[] },
  dumper: { load: loadDumperConfig, required: ['SOURCE_DATABASE_URL'] },
  loader: { load: loadLoaderConfig, required: ['TARGET_DATABASE_URL', 'LOADER_ENV'] },
};
const appServices: [string, keyof typeof apps][] = [
  ['scheduler', 'scheduler'],
  ['dumper', 'dumper'],
  ['loader-dev', 'loader'],
  ['loader-staging', 'loader'],
  ['loader-qa', 'loader'],
];

describe('docker-compose.yml', () => {
  it('has NATS with persisted JetStream, four PostgreSQL servers, a seed job and the five app services', () => {
    expect(Object.keys(services).sort()).toEqual(
      ['dev-db', 'dumper', 'loader-dev', 'loader-qa', 'loader-staging', 'nats', 'prod-db', 'qa-db', 'scheduler', 'seed', 'staging-db'].sort(),
    );
    expect(services.nats.command).toEqual(expect.arrayContaining(['-js', '-sd', '/data']));
    expect(services.nats.volumes).toContain('nats-data:/data');
    for (const db of ['prod-db', 'dev-db', 'staging-db', 'qa-db']) expect(services[db].image).toMatch(/^postgres:/);
    expect(services.seed.volumes).toContain('./demo:/demo:ro');
  });

  it.each(appServices)('%s runs the built app like `npm run start:%s`, with known and required variables', (name, app) => {
    const service = services[name];
    expect(service.build).toBe('.');
    expect(service.command!.join(' ')).toBe(scripts[`start:${app}`]);
    const known = variablesReadBy(apps[app].load);
    const given = Object.keys(service.environment ?? {});
    expect(given.filter((variable) => !known.includes(variable))).toEqual([]);
    expect(apps[app].required.filter((variable) => !given.includes(variable))).toEqual([]);
    // The configuration the service gets is valid as the app itself judges it.
    expect(() => apps[app].load(service.environment)).not.toThrow();
    expect(new URL(service.environment!.NATS_URL).hostname).toBe('nats');
    expect(service.depends_on?.nats?.condition).toBe('service_healthy');
  });

  it.each(appServices)('%s has a healthcheck on its own /health port', (name, app) => {
    const service = services[name];
    const port = service.environment?.HTTP_PORT ?? String(DEFAULT_HTTP_PORTS[app]);
    expect(service.healthcheck!.test.join(' ')).toContain(`http://127.0.0.1:${port}/health`);
  });

  it('points each loader at its own environment database and the dumper at production', () => {
    expect(new URL(services.dumper.environment!.SOURCE_DATABASE_URL).hostname).toBe('prod-db');
    for (const env of ['dev', 'staging', 'qa']) {
      const loader = services[`loader-${env}`];
      expect(loader.environment!.LOADER_ENV).toBe(env);
      expect(new URL(loader.environment!.TARGET_DATABASE_URL).hostname).toBe(`${env}-db`);
      expect(services.seed.command!.join('\n')).toContain(`${env}-db`);
    }
  });

  it('shares one snapshot volume between the dumper and every loader, mounted at SNAPSHOT_DIR', () => {
    for (const name of ['dumper', 'loader-dev', 'loader-staging', 'loader-qa']) {
      const service = services[name];
      expect(service.volumes).toContain(`snapshots:${service.environment!.SNAPSHOT_DIR}`);
    }
    expect(Object.keys(compose.volumes)).toEqual(expect.arrayContaining(['snapshots', 'nats-data']));
  });

  it('lets loaders scale: no fixed container name and no published host port', () => {
    for (const env of ['dev', 'staging', 'qa']) {
      const loader = services[`loader-${env}`];
      expect(loader.container_name).toBeUndefined();
      expect(loader.ports).toBeUndefined();
    }
  });

  describe('profile cluster', () => {
    const nodes = ['nats-1', 'nats-2', 'nats-3'];
    const clusterApps: [string, keyof typeof apps][] = [
      ['cluster-scheduler', 'scheduler'],
      ['cluster-dumper', 'dumper'],
      ['cluster-loader-dev', 'loader'],
      ['cluster-loader-staging', 'loader'],
      ['cluster-loader-qa', 'loader'],
    ];

    it('is three NATS nodes routed to each other, with JetStream on its own volume each, and the five apps', () => {
      expect(Object.keys(clusterServices).sort()).toEqual([...nodes, ...clusterApps.map(([name]) => name)].sort());
      for (const node of nodes) {
        const command = clusterServices[node].command!;
        expect(command).toEqual(expect.arrayContaining(['-js', '-sd', '/data', '--server_name', node, '--cluster_name', 'db-fanout']));
        const routes = command[command.indexOf('--routes') + 1].split(',');
        expect(routes.sort()).toEqual(nodes.filter((other) => other !== node).map((other) => `nats://${other}:6222`));
        expect(clusterServices[node].volumes).toEqual([`${node}-data:/data`]);
      }
    });

    it.each(clusterApps)('%s runs like `npm run start:%s` on every node, with SNAPSHOT_STORE=nats and no shared volume', (name, app) => {
      const service = clusterServices[name];
      expect(service.command!.join(' ')).toBe(scripts[`start:${app}`]);
      const env = service.environment!;
      const known = variablesReadBy(apps[app].load);
      expect(Object.keys(env).filter((variable) => !known.includes(variable))).toEqual([]);
      expect(() => apps[app].load(env)).not.toThrow();
      expect(env.NATS_URL.split(',').map((url) => new URL(url).hostname)).toEqual(nodes);
      expect(env.NATS_STREAM_REPLICAS).toBe('3');
      if (app !== 'scheduler') expect(env.SNAPSHOT_STORE).toBe('nats');
      if (app === 'dumper') expect(env.SNAPSHOT_REPLICAS).toBe('3');
      expect(service.volumes).toBeUndefined();
      for (const node of nodes) expect(service.depends_on?.[node]?.condition).toBe('service_healthy');
      const port = env.HTTP_PORT ?? String(DEFAULT_HTTP_PORTS[app]);
      expect(service.healthcheck!.test.join(' ')).toContain(`http://127.0.0.1:${port}/health`);
    });
  });

  it('builds the apps in the image it runs', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toContain('npm ci');
    expect(dockerfile).toContain('npm run build');
    expect(dockerfile).toContain('COPY --from=build /app/dist ./dist');
    // The image's own command (a loader) is `npm run start:loader`'s, V8 flags included.
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)![1];
    expect((JSON.parse(cmd) as string[]).join(' ')).toBe(scripts['start:loader']);
  });
});
