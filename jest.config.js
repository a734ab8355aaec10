// Jest cannot load NestJS 12 / nats.js v3 ES modules from CommonJS by itself, so they go
// through @swc/jest too (transformIgnorePatterns below).
const shared = {
  moduleFileExtensions: ['js', 'json', 'ts'],
  transform: { '^.+\\.(t|j)s$': ['@swc/jest'] },
  transformIgnorePatterns: ['/node_modules/(?!(@nestjs|@nats-io)/)'],
  moduleNameMapper: {
    '^@app/common(|/.*)$': '<rootDir>/libs/common/src$1',
  },
  testEnvironment: 'node',
};

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      ...shared,
      displayName: 'unit',
      rootDir: __dirname,
      testMatch: ['<rootDir>/apps/**/*.spec.ts', '<rootDir>/libs/**/*.spec.ts'],
    },
    {
      ...shared,
      displayName: 'e2e',
      rootDir: __dirname,
      testMatch: ['<rootDir>/test/*.e2e-spec.ts', '<rootDir>/test/*.spec.ts'],
      // Installs Debian's chromium for the browser tests when it is missing and it may (fresh machine).
      globalSetup: '<rootDir>/test/global-setup.ts',
    },
    {
      ...shared,
      displayName: 'faults',
      rootDir: __dirname,
      testMatch: ['<rootDir>/test/faults/*.e2e-spec.ts'],
    },
  ],
  testTimeout: 60_000,
  // The closing `tests: N passed, N failed` line that .ci/run's log ends with.
  reporters: ['default', '<rootDir>/test/support/summary-line-reporter.js'],
};
