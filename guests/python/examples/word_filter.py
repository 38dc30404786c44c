"""A filter in the reference's style: refuses messages with a blocked word, and tags answers."""

from typing import List, Optional

from sluice_pipeline import BaseModel, Field


class Pipeline:
    class Valves(BaseModel):
        pipelines: List[str] = ["*"]
        priority: int = 0
        BLOCKED_WORDS: List[str] = Field(default=["forbidden"], description="Messages with these words are refused")
        SUFFIX: str = Field(default="", description="Appended to every answer")

    def __init__(self):
        self.type = "filter"
        self.name = "Word Filter"
        self.valves = self.Valves()

    async def inlet(self, body: dict, user: Optional[dict] = None) -> dict:
        last = body["messages"][-1].get("content", "")
        for word in self.valves.BLOCKED_WORDS:
            if word and word.lower() in str(last).lower():
                raise ValueError(f"the message contains a blocked word: {word}")
        body.setdefault("metadata", {})["word_filter"] = "checked"
        return body

    async def outlet(self, body: dict, user: Optional[dict] = None) -> dict:
        if self.valves.SUFFIX:
            for message in body.get("messages", []):
                if message.get("role") == "assistant":
                    message["content"] = message.get("content", "") + self.valves.SUFFIX
        return body
