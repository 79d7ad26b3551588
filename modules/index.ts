// The built-in modules. They register through the same API as any plugin.
import type { ModuleDefinition } from "../core/module-api.js";
import apt from "./apt/index.js";
import bond from "./bond/index.js";
import dhcpcdDeny from "./dhcpcd_deny.js";
import gretapBond from "./gretap_bond.js";
import kernelModule from "./kernel_module.js";
import multiwan from "./multiwan/index.js";
import pullAgent from "./pull_agent/index.js";
import reboot from "./reboot.js";

export const builtinModules: ModuleDefinition[] = [apt, kernelModule, bond, gretapBond, dhcpcdDeny, multiwan, reboot, pullAgent];
