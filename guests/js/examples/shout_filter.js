// A filter: refuses empty messages, and tags every request it saw.
import { definePipeline, PipelineError, log } from "sluice_pipeline";

export const guest = definePipeline({
  id: "shout_filter",
  name: "Shout Filter",
  type: "filter",
  valves: {
    pipelines: { type: "array", items: { type: "string" }, default: ["*"] },
    priority: { type: "integer", default: 0 },
    TAG: { type: "string", default: "shouted", description: "Written into the request's metadata" },
  },
  inlet(body, user, valves) {
    const last = body.messages[body.messages.length - 1] || {};
    if (!String(last.content || "").trim()) throw new PipelineError("bad-request", "the message is empty");
    body.metadata = { ...(body.metadata || {}), shout_filter: valves.TAG };
    log(`inlet for ${user ? user.id : "nobody"}`);
    return body;
  },
  outlet(body) {
    for (const m of body.messages || []) if (m.role === "assistant") m.content = String(m.content).toUpperCase();
    return body;
  },
});
