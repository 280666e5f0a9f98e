import type { NetworkInterfaceInfo } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { networkFingerprint, watchNetwork, watchWake, type Watcher } from '../src/keeper/detectors.js';

type Interfaces = NodeJS.Dict<NetworkInterfaceInfo[]>;

const v4 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: '255.255.255.0',
  family: 'IPv4',
  mac: '02:00:00:00:00:01',
  internal,
  cidr: `${address}/24`,
});

const v6 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: 'ffff:ffff:ffff:ffff::',
  family: 'IPv6',
  mac: '02:00:00:00:00:01',
  internal,
  cidr: `${address}/64`,
  scopeid: 0,
});

const loopback: NetworkInterfaceInfo[] = [v4('127.0.0.1', true), v6('::1', true)];

const watchers: Watcher[] = [];
afterEach(() => {
  for (const w of watchers.splice(0)) w.stop();
});

describe('networkFingerprint', () => {
  it('lists non-internal addresses, sorted, regardless of interface order', () => {
    const a = networkFingerprint({
      lo: loopback,
      eth0: [v4('192.0.2.2'), v6('2001:db8::2')],
      wlan0: [v4('198.51.100.7')],
    });
    const b = networkFingerprint({
      wlan0: [v4('198.51.100.7')],
      eth0: [v6('2001:db8::2'), v4('192.0.2.2')],
      lo: loopback,
    });
    expect(a).toBe(b);
    expect(a).toBe('IPv4 192.0.2.2,IPv4 198.51.100.7,IPv6 2001:db8::2');
  });

  it('ignores internal and link-local addresses', () => {
    const base = networkFingerprint({ eth0: [v4('192.0.2.2')] });
    expect(
      networkFingerprint({
        lo: loopback,
        eth0: [v4('192.0.2.2'), v6('fe80::1c2d:3eff:fe4f:5a6b')],
        awdl0: [v6('FE80::1')],
        llw0: [v6('febf::1')],
        bridge0: [v4('169.254.12.34')],
        empty: undefined,
      }),
    ).toBe(base);
  });

  it('does not mistake addresses that merely look similar for link-local', () => {
    expect(networkFingerprint({ eth0: [v6('fec0::1'), v4('169.25.1.1')] })).toBe('IPv4 169.25.1.1,IPv6 fec0::1');
  });

  it('is empty when only loopback is up', () => {
    expect(networkFingerprint({ lo: loopback })).toBe('');
  });
});

describe('watchNetwork', () => {
  function setup() {
    const clock = new FakeClock();
    let current: Interfaces = { lo: loopback, eth0: [v4('192.0.2.2')] };
    let failing = false;
    const changes: string[] = [];
    const watcher = watchNetwork({
      clock,
      onChange: (fingerprint) => changes.push(fingerprint),
      interfaces: () => {
        if (failing) throw new Error('uv_interface_addresses failed');
        return current;
      },
    });
    watchers.push(watcher);
    return {
      clock,
      changes,
      watcher,
      set: (next: Interfaces) => {
        current = next;
      },
      fail: (value: boolean) => {
        failing = value;
      },
    };
  }

  it('does not fire for the first read or while nothing changes', async () => {
    const { clock, changes } = setup();
    await clock.advance(3_600_000);
    expect(changes).toEqual([]);
  });

  it('fires once per change, within one poll, with the new fingerprint', async () => {
    const { clock, changes, set } = setup();
    await clock.advance(12_000);
    set({ lo: loopback, eth0: [v4('192.0.2.2')], utun4: [v4('10.8.0.5')] }); // VPN up
    await clock.advance(5_000);
    expect(changes).toEqual(['IPv4 10.8.0.5,IPv4 192.0.2.2']);
    await clock.advance(60_000);
    expect(changes).toHaveLength(1);
    set({ lo: loopback, eth0: [v4('192.0.2.2')] }); // VPN down
    await clock.advance(5_000);
    expect(changes).toEqual(['IPv4 10.8.0.5,IPv4 192.0.2.2', 'IPv4 192.0.2.2']);
  });

  it('ignores changes of internal and link-local addresses', async () => {
    const { clock, changes, set } = setup();
    set({ lo: [...loopback, v4('127.0.0.2', true)], eth0: [v4('192.0.2.2')], awdl0: [v6('fe80::abcd')] });
    await clock.advance(60_000);
    expect(changes).toEqual([]);
  });

  it('uses the given poll period', async () => {
    const clock = new FakeClock();
    let address = '192.0.2.2';
    const changes: string[] = [];
    watchers.push(
      watchNetwork({
        clock,
        pollMs: 1000,
        onChange: (f) => changes.push(f),
        interfaces: () => ({ eth0: [v4(address)] }),
      }),
    );
    address = '192.0.2.3';
    await clock.advance(999);
    expect(changes).toEqual([]);
    await clock.advance(1);
    expect(changes).toEqual(['IPv4 192.0.2.3']);
  });

  it('treats a failing source as no change and keeps polling', async () => {
    const { clock, changes, set, fail } = setup();
    fail(true);
    await clock.advance(20_000);
    expect(changes).toEqual([]);
    fail(false);
    await clock.advance(5_000);
    expect(changes).toEqual([]);
    set({ eth0: [v4('198.51.100.7')] });
    await clock.advance(5_000);
    expect(changes).toEqual(['IPv4 198.51.100.7']);
  });

  it('takes the first good read as the baseline when the first read fails', async () => {
    const clock = new FakeClock();
    let failing = true;
    const changes: string[] = [];
    const source = (): Interfaces => {
      if (failing) throw new Error('no interfaces');
      return { eth0: [v4('192.0.2.2')] };
    };
    watchers.push(watchNetwork({ clock, onChange: (f) => changes.push(f), interfaces: source }));
    failing = false;
    await clock.advance(60_000);
    expect(changes).toEqual([]);
  });

  it('stops polling on stop()', async () => {
    const { clock, changes, watcher, set } = setup();
    expect(clock.pendingTimers).toBe(1);
    watcher.stop();
    expect(clock.pendingTimers).toBe(0);
    set({ eth0: [v4('198.51.100.7')] });
    await clock.advance(60_000);
    expect(changes).toEqual([]);
    watcher.stop(); // idempotent
  });

  it('can be stopped from inside onChange', async () => {
    const clock = new FakeClock();
    let address = '192.0.2.2';
    const watcher: Watcher = watchNetwork({
      clock,
      onChange: () => {
        watcher.stop();
      },
      interfaces: () => ({ eth0: [v4(address)] }),
    });
    address = '192.0.2.3';
    await clock.advance(5_000);
    expect(clock.pendingTimers).toBe(0);
  });

  it('keeps polling when onChange throws', async () => {
    const clock = new FakeClock();
    let address = '192.0.2.2';
    const seen: string[] = [];
    watchers.push(
      watchNetwork({
        clock,
        onChange: (f) => {
          seen.push(f);
          throw new Error('listener bug');
        },
        interfaces: () => ({ eth0: [v4(address)] }),
      }),
    );
    address = '192.0.2.3';
    await expect(clock.advance(5_000)).rejects.toThrow('listener bug');
    address = '192.0.2.4';
    await expect(clock.advance(5_000)).rejects.toThrow('listener bug');
    expect(seen).toEqual(['IPv4 192.0.2.3', 'IPv4 192.0.2.4']);
  });

  it('refuses a poll period that is not positive', () => {
    const clock = new FakeClock();
    expect(() => watchNetwork({ clock, pollMs: 0, onChange: () => undefined })).toThrow(RangeError);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('watchWake', () => {
  function setup(options: { pollMs?: number; thresholdMs?: number } = {}) {
    const clock = new FakeClock();
    const wakes: number[] = [];
    const watcher = watchWake({ clock, onWake: (slept) => wakes.push(slept), ...options });
    watchers.push(watcher);
    return { clock, wakes, watcher };
  }

  it('fires within one poll after a sleep, with about the time slept', async () => {
    const { clock, wakes } = setup();
    await clock.advance(7_000);
    clock.sleep(60_000);
    await clock.advance(5_000);
    expect(wakes).toEqual([60_000]);
    await clock.advance(3_600_000);
    expect(wakes).toHaveLength(1);
  });

  it('fires once per sleep', async () => {
    const { clock, wakes } = setup();
    clock.sleep(600_000);
    await clock.advance(30_000);
    clock.sleep(8 * 3_600_000);
    await clock.advance(30_000);
    expect(wakes).toEqual([600_000, 8 * 3_600_000]);
  });

  it('never fires over hours of plain advance', async () => {
    const { clock, wakes } = setup();
    await clock.advance(24 * 3_600_000);
    expect(wakes).toEqual([]);
  });

  it('ignores a jump up to the threshold (NTP steps)', async () => {
    const { clock, wakes } = setup();
    clock.sleep(10_000);
    await clock.advance(5_000);
    clock.sleep(10_001);
    await clock.advance(5_000);
    expect(wakes).toEqual([10_001]);
  });

  it('honours a custom threshold and poll period', async () => {
    const { clock, wakes } = setup({ pollMs: 1_000, thresholdMs: 2_000 });
    clock.sleep(3_000);
    await clock.advance(999);
    expect(wakes).toEqual([]);
    await clock.advance(1);
    expect(wakes).toEqual([3_000]);
  });

  it('does not take a wall clock stepped backwards for a wake', async () => {
    const { clock, wakes } = setup();
    clock.sleep(-3_600_000);
    await clock.advance(60_000);
    expect(wakes).toEqual([]);
  });

  it('stops polling on stop()', async () => {
    const { clock, wakes, watcher } = setup();
    expect(clock.pendingTimers).toBe(1);
    watcher.stop();
    expect(clock.pendingTimers).toBe(0);
    clock.sleep(60_000);
    await clock.advance(60_000);
    expect(wakes).toEqual([]);
  });

  it('can be stopped from inside onWake', async () => {
    const clock = new FakeClock();
    const watcher: Watcher = watchWake({
      clock,
      onWake: () => {
        watcher.stop();
      },
    });
    clock.sleep(60_000);
    await clock.advance(5_000);
    expect(clock.pendingTimers).toBe(0);
  });
});
