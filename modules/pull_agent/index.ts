// pull_agent: install and enable provision's pull agent on a host (what provision enrol
// runs over SSH). Its configuration, the device's own credentials (NATS creds and age
// identity, 0600), the fleet's verify key, provision's code (optional: an archive of the
// built dist/ and its node_modules, for Debian's nodejs) and the systemd unit; then the
// unit enabled and started, or restarted when something it reads changed.
import { defineModule, readShellAsset, type Change, type CommandOutput, type FileState } from "../../core/module-api.js";

type Args = {
  device: string;
  servers: string[];
  credentials: string;
  identity: string;
  verify_key: string;
  plugins: string[];
  /** base64 of a .tar.gz of provision's code, and the sha256 of the .tar.gz. */
  code_archive?: string;
  code_sha256?: string;
};

export const CONFIG_DIR = "/etc/provision";
export const CODE_DIR = "/opt/provision";
export const UNIT_NAME = "provision-agent.service";
const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
const paths = {
  config: `${CONFIG_DIR}/agent.yaml`,
  credentials: `${CONFIG_DIR}/agent.creds`,
  identity: `${CONFIG_DIR}/agent.age`,
  verifyKey: `${CONFIG_DIR}/fleet.pub`,
};
const archivePath = (sha: string) => `/var/lib/provision/agent-code-${sha.slice(0, 16)}.tgz.b64`;
const ensureNewline = (s: string) => (s.endsWith("\n") ? s : `${s}\n`);

/** The agent's configuration (cli/agent.ts reads it); JSON is YAML, and needs no quoting rules of its own. */
function configText(a: Args): string {
  const doc = { device: a.device, servers: a.servers, credentials: paths.credentials, identity: paths.identity, verify_key: paths.verifyKey, plugins: a.plugins };
  return `# provision pull agent (written by provision enrol)\n${JSON.stringify(doc, null, 2)}\n`;
}

export default defineModule<Args, Record<string, { file: string } | { command: string[] }>>({
  name: "pull_agent",
  description: "Install, configure and enable provision's pull agent (systemd unit provision-agent)",
  schema: {
    type: "object",
    additionalProperties: false,
    required: ["device", "servers", "credentials", "identity", "verify_key"],
    properties: {
      device: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$" },
      servers: { type: "array", minItems: 1, items: { type: "string", pattern: "^[^\\s:]+:[0-9]{1,5}$" } },
      credentials: { type: "string", pattern: "BEGIN NATS USER JWT" },
      identity: { type: "string", pattern: "^AGE-SECRET-KEY-1" },
      verify_key: { type: "string", pattern: "BEGIN PUBLIC KEY" },
      plugins: { type: "array", items: { type: "string", minLength: 1 }, default: [] },
      code_archive: { type: "string", minLength: 1 },
      code_sha256: { type: "string", pattern: "^[0-9a-f]{64}$" },
    },
    dependentRequired: { code_archive: ["code_sha256"], code_sha256: ["code_archive"] },
  },
  secrets: (a) => [a.credentials, a.identity],
  facts: (a) => ({
    config: { file: paths.config },
    credentials: { file: paths.credentials },
    identity: { file: paths.identity },
    verifyKey: { file: paths.verifyKey },
    unit: { file: UNIT_PATH },
    enabled: { command: ["systemctl", "is-enabled", UNIT_NAME] },
    ...(a.code_sha256 ? { code: { file: `${CODE_DIR}/.provision-code` }, archive: { file: archivePath(a.code_sha256) } } : {}),
  }),
  plan(a, facts) {
    const file = (name: keyof typeof paths | "unit", path: string, after: string, summary: string, mode: string): Change[] => {
      const before = (facts[name] as FileState).content;
      return before === after ? [] : [{ kind: "file", path, before, after, mode, summary }];
    };
    const files = [
      ...file("credentials", paths.credentials, ensureNewline(a.credentials), "install the device's NATS credentials", "0600"),
      ...file("identity", paths.identity, ensureNewline(a.identity), "install the device's age identity", "0600"),
      ...file("verifyKey", paths.verifyKey, ensureNewline(a.verify_key), "install the fleet's bundle verify key", "0644"),
      ...file("config", paths.config, configText(a), "configure the pull agent", "0644"),
    ];
    const code: Change[] = [];
    if (a.code_sha256 && a.code_archive && (facts.code as FileState).content !== `${a.code_sha256}\n`) {
      const archive = archivePath(a.code_sha256);
      const install = readShellAsset(import.meta.url, "install-code.sh");
      code.push(
        {
          kind: "file",
          path: archive,
          before: (facts.archive as FileState).content,
          after: a.code_archive,
          mode: "0600",
          summary: `copy provision's code (${a.code_sha256.slice(0, 12)})`,
        },
        {
          kind: "command",
          argv: ["sh", "-c", install, "install-code", archive, CODE_DIR, a.code_sha256],
          undo: ["sh", "-c", install, "install-code", "--undo", CODE_DIR],
          summary: `install provision's code in ${CODE_DIR}`,
        },
      );
    }
    const unit = file("unit", UNIT_PATH, readShellAsset(import.meta.url, UNIT_NAME), `install the systemd unit ${UNIT_NAME}`, "0644");
    const enabled = (facts.enabled as CommandOutput).stdout.trim() === "enabled";
    const service: Change[] = [];
    if (unit.length) service.push({ kind: "command", argv: ["systemctl", "daemon-reload"], summary: "reload systemd's units" });
    if (!enabled)
      service.push({
        kind: "command",
        argv: ["systemctl", "enable", "--now", UNIT_NAME],
        undo: ["systemctl", "disable", "--now", UNIT_NAME],
        summary: `enable and start ${UNIT_NAME}`,
      });
    else if (files.length || code.length || unit.length) service.push({ kind: "command", argv: ["systemctl", "restart", UNIT_NAME], summary: `restart ${UNIT_NAME}` });
    return [...files, ...code, ...unit, ...service];
  },
  verify: {
    probes: () => ({ enabled: { command: ["systemctl", "is-enabled", UNIT_NAME] } }),
    check: (_a, facts) => {
      const answer = (facts.enabled as CommandOutput).stdout.trim();
      return answer === "enabled" ? [] : [`${UNIT_NAME} is not enabled (systemctl is-enabled: ${answer || "no answer"})`];
    },
  },
});
