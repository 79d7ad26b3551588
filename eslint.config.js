// ESLint (npm run lint): a small set of rules that catch real bugs, some with
// typescript-eslint's type information (a Promise nobody awaits or checks for failure, a
// Promise where a callback's result is ignored). Formatting is Prettier's business.
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

const bugs = {
  // `x == null` is the one loose comparison kept: null or undefined
  eqeqeq: ["error", "always", { null: "ignore" }],
  "no-fallthrough": "error",
  "prefer-const": "error",
};

export default defineConfig(
  { ignores: ["dist/", "node_modules/", ".cache/"] },
  { files: ["**/*.js"], rules: bugs },
  {
    files: ["**/*.ts"],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "@typescript-eslint": tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      ...bugs,
      // node:test's test() returns a Promise that the runner itself awaits
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }] }],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "warn",
    },
  },
);
