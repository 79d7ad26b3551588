// The eth1 seed on the networkd flavour (see seed-on-flavour.ts for what runs).
import { seedOnFlavour } from "./seed-on-flavour.js";

seedOnFlavour({ flavor: "networkd", seed: "eth1", lossBound: 2 });
