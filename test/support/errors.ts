/**
 * Runs `work` expecting it to throw a `type`, and returns that error so a spec can check its message
 * and fields. Any other error is rethrown as it was; no error at all fails with `whenAccepted`.
 */
export function errorThrownBy<E extends Error>(type: abstract new (...args: never[]) => E, work: () => unknown, whenAccepted: string): E {
  try {
    work();
  } catch (error) {
    if (error instanceof type) return error;
    throw error;
  }
  throw new Error(whenAccepted);
}
