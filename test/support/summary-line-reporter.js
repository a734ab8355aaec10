// @ts-check
const { writeSync } = require('node:fs');

/**
 * A Jest reporter that ends every run with one plain line, `tests: N passed, N failed`, for whoever
 * reads a CI log. Jest always adds its own summary after the custom reporters, so the line is
 * written as the process exits, to stay the last one.
 */
class SummaryLineReporter {
  /** @param {unknown} _contexts @param {{ numPassedTests: number; numFailedTests: number }} results */
  onRunComplete(_contexts, results) {
    const line = `tests: ${results.numPassedTests} passed, ${results.numFailedTests} failed\n`;
    process.once('exit', () => writeSync(1, line));
  }
}
module.exports = SummaryLineReporter;
