import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type AuthChallenge, bearerChallenge, parseWwwAuthenticate } from '../src/oauth/www-authenticate.js';

function challenge(scheme: string, params: Record<string, string> = {}, token68?: string): AuthChallenge {
  return { scheme, params, ...(token68 !== undefined && { token68 }) };
}

describe('parseWwwAuthenticate', () => {
  const cases: [string, string, AuthChallenge[]][] = [
    ['a bare Bearer', 'Bearer', [challenge('bearer')]],
    ['a bare Bearer with spaces', '  Bearer  ', [challenge('bearer')]],
    [
      'resource_metadata (RFC 9728 §5.1)',
      'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"',
      [challenge('bearer', { resource_metadata: 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp' })],
    ],
    [
      'several parameters, mixed quoting',
      'Bearer realm="example", error=invalid_token, error_description="The access token expired"',
      [
        challenge('bearer', {
          realm: 'example',
          error: 'invalid_token',
          error_description: 'The access token expired',
        }),
      ],
    ],
    ['scheme and names are case-insensitive', 'BEARER Scope="a b"', [challenge('bearer', { scope: 'a b' })]],
    [
      'escapes in a quoted string',
      'Bearer realm="a \\"quoted\\" \\\\ word"',
      [challenge('bearer', { realm: 'a "quoted" \\ word' })],
    ],
    [
      'a comma inside a quoted string',
      'Bearer scope="read, write", error="x"',
      [challenge('bearer', { scope: 'read, write', error: 'x' })],
    ],
    [
      'two challenges (RFC 9110 §11.6.1 example)',
      'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
      [
        challenge('newauth', { realm: 'apps', type: '1', title: 'Login to "apps"' }),
        challenge('basic', { realm: 'simple' }),
      ],
    ],
    [
      'a bare scheme before another',
      'Bearer, Basic realm="x"',
      [challenge('bearer'), challenge('basic', { realm: 'x' })],
    ],
    [
      'a bare scheme after another',
      'Basic realm="x", Bearer',
      [challenge('basic', { realm: 'x' }), challenge('bearer')],
    ],
    [
      'a token68',
      'Negotiate YIIFyQYGKwYBBQUCoIIFvTCCBbm==',
      [challenge('negotiate', {}, 'YIIFyQYGKwYBBQUCoIIFvTCCBbm==')],
    ],
    ['a token68 then a challenge', 'Negotiate abc=, Bearer', [challenge('negotiate', {}, 'abc='), challenge('bearer')]],
    ['whitespace around =', 'Bearer realm = "x" ,  scope =y', [challenge('bearer', { realm: 'x', scope: 'y' })]],
    ['stray commas', ',, Bearer ,, realm="x",, ,', [challenge('bearer', { realm: 'x' })]],
    ['the first occurrence of a name wins', 'Bearer realm="a", realm="b"', [challenge('bearer', { realm: 'a' })]],
    ['an empty quoted value', 'Bearer realm=""', [challenge('bearer', { realm: '' })]],
    ['an empty unquoted value', 'Bearer realm=, scope="s"', [challenge('bearer', { realm: '', scope: 's' })]],
    [
      'an unterminated quoted string runs to the end',
      'Bearer realm="abc, def',
      [challenge('bearer', { realm: 'abc, def' })],
    ],
    ['a trailing backslash', 'Bearer realm="abc\\', [challenge('bearer', { realm: 'abc' })]],
    ['garbage is skipped to the next comma', 'Bearer @@@, error="x"', [challenge('bearer', { error: 'x' })]],
    ['garbage where a scheme belongs', '@@@ nonsense, Bearer', [challenge('bearer')]],
    ['a scheme glued to =', 'Bearer="x", Basic', [challenge('basic')]],
    ['an empty header', '', []],
    ['only separators', ' , ,\t', []],
    [
      'a parameter named __proto__ is just a parameter',
      'Bearer __proto__="x"',
      [challenge('bearer', Object.fromEntries([['__proto__', 'x']]))],
    ],
  ];

  it.each(cases)('%s', (_name, header, expected) => {
    const parsed = parseWwwAuthenticate(header);
    expect(parsed.map((c) => ({ ...c, params: { ...c.params } }))).toEqual(
      expected.map((c) => ({ ...c, params: { ...c.params } })),
    );
  });

  it('never throws and stays fast on any input', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (header) => {
        const challenges = parseWwwAuthenticate(header);
        for (const c of challenges) expect(c.scheme).toMatch(/^[!#$%&'*+\-.^_`|~0-9a-z]+$/);
      }),
      { numRuns: 2000 },
    );
    const hostile = `Bearer ${'a="\\'.repeat(20_000)}, ${'x'.repeat(50_000)}`;
    const started = performance.now();
    parseWwwAuthenticate(hostile);
    expect(performance.now() - started).toBeLessThan(500);
  });
});

describe('bearerChallenge', () => {
  it('finds the Bearer challenge among others', () => {
    const params = bearerChallenge(parseWwwAuthenticate('Basic realm="x", Bearer resource_metadata="https://m/x"'));
    expect(params?.resource_metadata).toBe('https://m/x');
  });

  it('gives an empty record for a bare Bearer, nothing without one', () => {
    expect(bearerChallenge(parseWwwAuthenticate('Bearer'))).toEqual({});
    expect(bearerChallenge(parseWwwAuthenticate('Basic realm="x"'))).toBeUndefined();
  });
});
