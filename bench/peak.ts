/** The most timestamps (milliseconds, sorted ascending) in any window of one second. */
export function peakPerSecond(sorted: readonly number[]): number {
  let best = 0;
  let from = 0;
  for (let i = 0; i < sorted.length; i++) {
    while ((sorted[i] ?? 0) - (sorted[from] ?? 0) >= 1000) from++;
    best = Math.max(best, i - from + 1);
  }
  return best;
}
