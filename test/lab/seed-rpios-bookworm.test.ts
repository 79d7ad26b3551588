// The wlan0 seed on the rpios-bookworm flavour (see seed-on-flavour.ts for what runs).
import { seedOnFlavour } from "./seed-on-flavour.js";

seedOnFlavour({ flavor: "rpios-bookworm", seed: "wlan0", lossBound: 4, cutOff: true, readers: "nmcli round trips" });
