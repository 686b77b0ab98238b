// Streams the assistant's answer into the page. Everything received is set as text (textContent), never as HTML.
"use strict";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function parseEvents(buffer) {
  // Split complete SSE events off the buffer; returns [events, rest].
  const events = [];
  const normalised = buffer.replace(/\r\n/g, "\n").replace(/\r/g, "\n");
  const blocks = normalised.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length) events.push({ name: name, data: data.join("\n") });
  }
  return [events, rest];
}

function render(event, answer, evidence, calls, citations) {
  let data = {};
  try { data = JSON.parse(event.data); } catch (error) { return; }
  if (event.name === "chunk") {
    answer.textContent += data.text || "";
  } else if (event.name === "tool_start") {
    const details = element("details");
    details.append(element("summary", "", (data.tool || "tool") + " · running"));
    calls.set(data.id, details);
    evidence.append(details);
  } else if (event.name === "tool_end") {
    const details = calls.get(data.id) || element("details");
    details.querySelector("summary").textContent = (data.tool || "tool") + " · " + (data.status || "");
    details.append(element("code", "json", JSON.stringify(data.result === undefined ? data : data.result)));
  } else if (event.name === "citations") {
    for (const citation of data.citations || []) {
      if (citation.kind === "runbook") {
        citations.append(element("li", "", "runbook " + citation.document + " › " + citation.heading));
      }
    }
  } else if (event.name === "error") {
    answer.parentNode.append(element("p", "error", data.message || "the answer failed"));
  }
}

async function ask(form) {
  const conversation = document.getElementById("conversation");
  const textarea = form.querySelector("textarea");
  const button = form.querySelector("button");
  const body = new URLSearchParams(new FormData(form));
  conversation.append(element("div", "turn user", textarea.value));
  const reply = element("div", "turn assistant");
  const answer = element("p", "text", "");
  const evidence = element("div", "evidence");
  const citations = element("ul", "citations");
  reply.append(answer, evidence, citations);
  conversation.append(reply);
  textarea.value = "";
  button.disabled = true;
  try {
    const response = await fetch(form.action, { method: "POST", body: body, credentials: "same-origin",
                                                headers: { "Accept": "text/event-stream" } });
    if (!response.ok) {
      reply.append(element("p", "error", "the question was refused (" + response.status + ")"));
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const calls = new Map();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const [events, rest] = parseEvents(buffer);
      buffer = rest;
      for (const event of events) render(event, answer, evidence, calls, citations);
    }
  } catch (error) {
    reply.append(element("p", "error", "the connection broke; ask again"));
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("ask");
  if (!form) return;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    ask(form);
  });
});
