// What a JavaScript pipeline for sluice uses: definePipeline() turns a plain description
// (id, name, type, valves, inlet/outlet/pipe) into the `guest` export of wit/pipeline.wit.
// build.mjs puts this file in front of the pipeline's own file and builds one component.
import { log as hostLog, kvGet, kvSet, kvDelete } from "sluice:pipeline/host@0.1.0";

export const log = (message, level = "info") => hostLog(level, String(message));
export const kv = { get: kvGet, set: (key, value, ttlSeconds = 0) => kvSet(key, value, ttlSeconds), delete: kvDelete };

// A refusal with an HTTP meaning: `throw new PipelineError("rejected", "too many requests")`.
export class PipelineError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const KINDS = ["bad-request", "rejected", "not-found", "rate-limited", "upstream", "unavailable", "timeout", "not-configured", "internal"];

function wrap(e) {
  const kind = e instanceof PipelineError && KINDS.includes(e.kind) ? e.kind : "internal";
  return { kind, message: String(e && e.message !== undefined ? e.message : e) };
}

function schema(valves) {
  const properties = {};
  for (const [name, spec] of Object.entries(valves || {})) {
    const { secret, ...rest } = spec;
    properties[name] = { ...rest, ...(secret ? { format: "password", writeOnly: true } : {}) };
    if (!("default" in properties[name])) throw new Error(`valve ${name} has no default`);
  }
  return { type: "object", properties };
}

function toEvent(item) {
  if (typeof item === "string") return { tag: "text", val: item };
  if (item && typeof item === "object" && "status" in item) {
    return { tag: "status", val: { description: String(item.status), done: Boolean(item.done) } };
  }
  if (item && typeof item === "object" && "tag" in item) return item;
  return { tag: "text", val: JSON.stringify(item) };
}

export function definePipeline(p) {
  const type = p.type || "pipe";
  const values = (text) => ({ ...Object.fromEntries(Object.entries(p.valves || {}).map(([k, v]) => [k, v.default])), ...JSON.parse(text) });
  const hook = (fn) => (body, user, valves) => {
    if (!fn) return body;
    try {
      return JSON.stringify(fn(JSON.parse(body), user ? JSON.parse(user) : null, values(valves)));
    } catch (e) {
      throw wrap(e);
    }
  };
  class Answer {
    constructor(items) {
      this.items = items;
    }
    next() {
      try {
        const step = this.items.next();
        return step.done ? undefined : toEvent(step.value);
      } catch (e) {
        return { tag: "error", val: wrap(e) };
      }
    }
  }
  return {
    Answer,
    describe: () => JSON.stringify({
      id: p.id, name: p.name || p.id, kind: type,
      models: (p.models || []).map((m) => ({ id: String(m.id), name: String(m.name || m.id) })),
      valves: schema(p.valves),
    }),
    inlet: hook(p.inlet),
    outlet: hook(p.outlet),
    pipe(model, body, user, valves) {
      let out;
      try {
        const request = JSON.parse(body);
        const messages = request.messages || [];
        const last = [...messages].reverse().find((m) => m.role === "user");
        const text = last ? (typeof last.content === "string" ? last.content : (last.content.find((c) => c.type === "text") || {}).text || "") : "";
        out = p.pipe({ userMessage: text, modelId: model, messages, body: request, user: user ? JSON.parse(user) : null, valves: values(valves) });
      } catch (e) {
        throw wrap(e);
      }
      const items = typeof out === "string" ? [out][Symbol.iterator]() : out[Symbol.iterator]();
      return new Answer(items);
    },
  };
}
