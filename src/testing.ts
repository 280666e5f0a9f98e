/**
 * Test helpers for users of the library (`mcp-tether/testing`): a fake clock
 * that runs a day-long outage in milliseconds.
 */
export { FakeClock } from './clock/fake.js';
