// Lint: ESLint's and typescript-eslint's recommended rules; layout is Prettier's job (npm run lint runs both).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'schemas/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // Layering: the core does not depend on plugins (what it shares with them lives in src/sdk).
    files: ['src/**/*.{ts,mts,js,mjs}'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.{1,2}/(?:.*/)?plugins/',
              caseSensitive: true,
              message: 'src/ may not import from plugins/: move what both need into src/sdk (or src/), and let the plugin import it from there.',
            },
          ],
        },
      ],
    },
  },
  {
    // Plugins and examples see the core only through the SDK, as a plugin in its own package would.
    files: ['plugins/**/*.{ts,mts,js,mjs}', 'examples/**/*.{ts,mts,js,mjs}'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.{1,2}/(?:.*/)?src/(?!sdk/index\\.js$)',
              caseSensitive: true,
              message: 'plugins/ and examples/ may import from src/ only src/sdk/index.js: export what the plugin needs from the SDK.',
            },
          ],
        },
      ],
    },
  },
  {
    // Tests read JSON answers whose shape the assertions check.
    files: ['**/*.test.ts', 'test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
