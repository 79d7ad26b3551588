// Prettier (npm run format, npm run format:check): the house style as it was kept by hand —
// 2 spaces, double quotes, semicolons, trailing commas — and lines as wide as the code had
// them: of 160, 180 and 200, 180 touched the fewest existing lines (1254 of 14,700).
export default {
  printWidth: 180,
  trailingComma: "all",
};
