import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadDumperConfig, loadLoaderConfig, loadSchedulerConfig, variablesReadBy } from '@app/common/config';

/**
 * No cluster runs here, so the manifests under deploy/kubernetes are checked against the code: every
 * variable a pod gets is one its app reads, every required one is there, every reference resolves to a
 * key of a ConfigMap or Secret in the same manifests, the resulting configuration is valid as the app
 * itself judges it, and ports and probes are the app's own.
 */
const ROOT = join(__dirname, '..');
const DIR = join(ROOT, 'deploy', 'kubernetes');

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { configMapKeyRef?: { name: string; key: string }; secretKeyRef?: { name: string; key: string } };
}
interface Probe {
  httpGet?: { path: string; port: number };
}
interface Container {
  name: string;
  image: string;
  command: string[];
  ports?: { containerPort: number }[];
  env?: EnvVar[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}
interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    minAvailable?: number;
    selector?: { matchLabels: Record<string, string> };
    template?: { metadata: { labels: Record<string, string> }; spec: { containers: Container[]; volumes?: unknown[] } };
  };
}

const kustomization = parseAllDocuments(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))[0].toJS() as { resources: string[]; namespace: string };
const manifests: Manifest[] = kustomization.resources.flatMap((file) =>
  parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((doc) => doc.toJS() as Manifest),
);
const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
const byKind = (kind: string) => manifests.filter((m) => m.kind === kind);
const deployments = byKind('Deployment');

const apps = {
  scheduler: { load: loadSchedulerConfig, required: [] as string[], port: 3000 },
  dumper: { load: loadDumperConfig, required: ['SOURCE_DATABASE_URL'], port: 3001 },
  loader: { load: loadLoaderConfig, required: ['TARGET_DATABASE_URL', 'LOADER_ENV'], port: 3002 },
};
type App = keyof typeof apps;
const appOf = (container: Container): App => /dist\/apps\/(\w+)\/main\.js/.exec(container.command.join(' '))![1] as App;

/** The environment a container ends up with, references resolved against the manifests' own objects. */
function resolveEnv(container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    const ref = variable.valueFrom?.configMapKeyRef ?? variable.valueFrom?.secretKeyRef;
    if (!ref) {
      env[variable.name] = variable.value!;
      continue;
    }
    const kind = variable.valueFrom?.configMapKeyRef ? 'ConfigMap' : 'Secret';
    const source = manifests.find((m) => m.kind === kind && m.metadata.name === ref.name);
    if (!source) throw new Error(`${container.name}: ${variable.name} refers to a missing ${kind} ${ref.name}`);
    const value = (source.data ?? source.stringData ?? {})[ref.key];
    if (value === undefined) throw new Error(`${container.name}: ${variable.name} refers to a missing key ${ref.key} of ${kind} ${ref.name}`);
    env[variable.name] = value;
  }
  return env;
}

describe('deploy/kubernetes', () => {
  it('lists every manifest file in its kustomization, all in one namespace', () => {
    const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    expect([...kustomization.resources].sort()).toEqual(files.sort());
    for (const m of manifests.filter((m) => m.kind !== 'Namespace')) expect(m.metadata.namespace).toBe(kustomization.namespace);
  });

  it('has a Deployment for the scheduler, the dumper and one loader per environment', () => {
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(['dumper', 'loader-dev', 'loader-qa', 'loader-staging', 'scheduler']);
  });

  it.each(deployments.map((d) => [d.metadata.name, d] as const))('%s runs its app with known, required and valid variables', (_name, deployment) => {
    const [container] = deployment.spec!.template!.spec.containers;
    const app = appOf(container);
    expect(container.command.join(' ')).toBe(scripts[`start:${app}`]);
    const env = resolveEnv(container);
    const known = variablesReadBy(apps[app].load);
    expect(Object.keys(env).filter((v) => !known.includes(v))).toEqual([]);
    expect(apps[app].required.filter((v) => !(v in env))).toEqual([]);
    // A Secret's placeholder token is refused until someone sets their own (passwords in URLs are the user's to fill in too).
    const placeholders = Object.keys(env).filter((v) => env[v] === 'CHANGE-ME');
    for (const variable of placeholders) expect(() => apps[app].load(env)).toThrow(`${variable} is still the placeholder CHANGE-ME`);
    const edited = { ...env, ...Object.fromEntries(placeholders.map((v) => [v, 'a-secret-of-our-own'])) };
    expect(() => apps[app].load(edited)).not.toThrow();
    // Snapshots travel through the broker: no volume is shared between pods.
    if (app !== 'scheduler') expect(env.SNAPSHOT_STORE).toBe('nats');
    expect(deployment.spec!.template!.spec.volumes).toBeUndefined();
  });

  it.each(deployments.map((d) => [d.metadata.name, d] as const))(
    '%s exposes its HTTP_PORT, is ready on /health there and alive on /health/live (never restarted for a broker or database outage)',
    (_name, deployment) => {
      const [container] = deployment.spec!.template!.spec.containers;
      const port = Number(resolveEnv(container).HTTP_PORT ?? apps[appOf(container)].port);
      expect(container.ports?.map((p) => p.containerPort)).toEqual([port]);
      expect(container.readinessProbe?.httpGet).toEqual({ path: '/health', port });
      expect(container.livenessProbe?.httpGet).toEqual({ path: '/health/live', port });
    },
  );

  it('keeps database URLs and tokens in Secrets, never as literal values', () => {
    for (const deployment of deployments) {
      for (const variable of deployment.spec!.template!.spec.containers[0].env ?? []) {
        if (/DATABASE_URL|TOKEN|PASSWORD|MASKING_KEY/.test(variable.name)) expect(variable.valueFrom?.secretKeyRef).toBeDefined();
      }
    }
  });

  it('runs each environment loader with replicas, its own LOADER_ENV and database, and a PodDisruptionBudget', () => {
    const budgets = byKind('PodDisruptionBudget');
    for (const env of ['dev', 'staging', 'qa']) {
      const deployment = deployments.find((d) => d.metadata.name === `loader-${env}`)!;
      expect(deployment.spec!.replicas).toBeGreaterThanOrEqual(2);
      const resolved = resolveEnv(deployment.spec!.template!.spec.containers[0]);
      expect(resolved.LOADER_ENV).toBe(env);
      expect(new URL(resolved.TARGET_DATABASE_URL).hostname).toContain(env);
      const labels = deployment.spec!.template!.metadata.labels;
      const budget = budgets.find((b) => Object.entries(b.spec!.selector!.matchLabels).every(([k, v]) => labels[k] === v));
      expect(budget?.spec?.minAvailable).toBe(1);
      // The budget selects this environment's loaders only.
      const others = deployments.filter((d) => d !== deployment);
      for (const other of others) {
        const otherLabels = other.spec!.template!.metadata.labels;
        expect(Object.entries(budget!.spec!.selector!.matchLabels).every(([k, v]) => otherLabels[k] === v)).toBe(false);
      }
    }
  });
});
