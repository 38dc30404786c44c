// A pipe that streams: counts to the number in the user's message, one event per number, and
// keeps how many answers it gave in sluice's store.
import { definePipeline, kv } from "sluice_pipeline";

function* count(n, answer) {
  yield { status: `answer ${answer}`, done: false };
  for (let i = 1; i <= n; i++) yield `${i}${i < n ? " " : ""}`;
  yield { status: `answer ${answer}`, done: true };
}

export const guest = definePipeline({
  id: "count_pipe",
  name: "Counter",
  valves: { MAX: { type: "integer", default: 100, description: "The highest number it counts to" } },
  pipe({ userMessage, valves }) {
    const answer = Number(kv.get("answers") || 0) + 1;
    kv.set("answers", String(answer));
    const n = Math.min(parseInt(userMessage, 10) || 3, valves.MAX);
    return count(n, answer);
  },
});
