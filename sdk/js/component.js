// The SDK bound to the engine's interfaces, for components (ComponentizeJS resolves the
// `sluice:plugin/...` imports): what a consumer imports as "sluice-sdk".
import * as emit from "sluice:plugin/emit@0.1.0";
import * as log from "sluice:plugin/log@0.1.0";
import * as state from "sluice:plugin/state@0.1.0";

import { bind } from "./index.js";

bind({ state, emit, log });

export * from "./index.js";
