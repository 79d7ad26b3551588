// The wlan0 seed on the debian12 flavour (see seed-on-flavour.ts for what runs).
import { seedOnFlavour } from "./seed-on-flavour.js";

seedOnFlavour({ flavor: "debian12", seed: "wlan0", lossBound: 4, degradedLive: true, sharedInterfaces: true });
