// The eth1 seed on the rpios-trixie flavour (see seed-on-flavour.ts for what runs).
import { seedOnFlavour } from "./seed-on-flavour.js";

seedOnFlavour({ flavor: "rpios-trixie", seed: "eth1", lossBound: 2 });
