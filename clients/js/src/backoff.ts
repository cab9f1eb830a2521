/**
 * Exponential backoff with full jitter: a uniformly random delay in
 * [0, min(maxDelayMs, minDelayMs * 2^attempt)].
 */
export function backoffDelay(
  attempt: number,
  minDelayMs: number,
  maxDelayMs: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(maxDelayMs, minDelayMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}
