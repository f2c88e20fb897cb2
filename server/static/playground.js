// The internvl-serve playground: plain JS against the server's public API, nothing fetched from elsewhere.
"use strict";

(() => {
  const KEY_STORAGE = "internvl-playground-api-key";
  const DEFAULT_BUDGET = 12;

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // Display sizes in CSS pixels: explicit, so overlays drawn in percentages sit exactly on the image.
  const THUMB_BOX = [232, 160];
  const FIGURE_BOX = [520, 360];
  function fitInto(img, width, height, [boxWidth, boxHeight], upscale) {
    const scale = Math.min(boxWidth / width, boxHeight / height, upscale ? Infinity : 1);
    img.style.width = `${Math.max(1, Math.round(width * scale))}px`;
    img.style.height = `${Math.max(1, Math.round(height * scale))}px`;
  }

  const state = {
    model: null,
    // Finished turns: the user message as sent, its images (for tile counts and boxes), and the answer.
    turns: [],
    // Media waiting in the composer.
    attachments: [],
    // The AbortController of the answer being streamed, if any.
    controller: null,
  };

  // ---- API access ---------------------------------------------------------

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // The server answers errors as OpenAI does: {"error": {"message", "type", "param", "code"}}.
  async function errorMessage(response) {
    let text = "";
    try {
      text = await response.text();
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
    } catch (_) { /* not JSON: show the status and the text */ }
    return `${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`;
  }

  function showError(message) {
    const banner = $("error");
    banner.textContent = message;
    banner.hidden = !message;
  }

  async function loadModel() {
    const label = $("model");
    try {
      const response = await fetch("/v1/models", { headers: authHeaders() });
      if (!response.ok) {
        // The model last seen stays: a request then shows the same refusal where it was asked.
        showError(await errorMessage(response));
        return;
      }
      const models = (await response.json()).data || [];
      state.model = models.length ? models[0].id : null;
      label.textContent = state.model || "no model";
      showError("");
      state.attachments.forEach((attachment) => attachment.kind === "image" && updatePreview(attachment));
    } catch (error) {
      showError(`cannot reach the server: ${error.message}`);
    }
  }

  // ---- Attachments ----------------------------------------------------------

  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function addFiles(files) {
    for (const file of files) {
      if (file.type.startsWith("image/")) await addImage(file);
      else if (file.type.startsWith("video/")) await addVideo(file);
      else showError(`${file.name || "that file"} is neither an image nor a video`);
    }
  }

  async function addImage(file) {
    const url = await readAsDataURL(file);
    const probe = new Image();
    probe.src = url;
    try {
      await probe.decode();
    } catch (_) {
      showError(`${file.name || "the pasted image"} could not be decoded as an image`);
      return;
    }
    const attachment = {
      kind: "image",
      url,
      name: file.name || "pasted image",
      // Browsers apply EXIF orientation, as the server does before tiling.
      width: probe.naturalWidth,
      height: probe.naturalHeight,
      budget: DEFAULT_BUDGET,
      detail: "auto",
      plan: null,
      previewSeq: 0,
    };
    state.attachments.push(attachment);
    renderImageCard(attachment);
    scrollToEnd(); // the composer grew: keep the latest answer in view
    await updatePreview(attachment);
  }

  async function addVideo(file) {
    const attachment = { kind: "video", url: await readAsDataURL(file), name: file.name || "video", numFrames: null };
    state.attachments.push(attachment);
    renderVideoCard(attachment);
    scrollToEnd();
  }

  function removeAttachment(attachment) {
    state.attachments = state.attachments.filter((item) => item !== attachment);
    attachment.card.remove();
  }

  function cardShell(attachment) {
    const card = el("div", `attachment ${attachment.kind}`);
    const head = el("div", "attachment-head");
    head.append(el("span", "name", attachment.name));
    const remove = el("button", "remove", "\u00d7");
    remove.type = "button";
    remove.title = "Remove";
    remove.addEventListener("click", () => removeAttachment(attachment));
    head.append(remove);
    card.append(head);
    attachment.card = card;
    $("attachments").append(card);
    return card;
  }

  function renderImageCard(attachment) {
    const card = cardShell(attachment);
    const frame = el("div", "thumb");
    const img = el("img");
    img.src = attachment.url;
    img.alt = attachment.name;
    fitInto(img, attachment.width, attachment.height, THUMB_BOX, true);
    const grid = el("div", "grid-overlay");
    frame.append(img, grid);
    card.append(frame);

    const controls = el("div", "controls");
    const budgetLabel = el("label", "budget", "Tiles ");
    const range = el("input");
    Object.assign(range, { type: "range", min: 1, max: 40, value: attachment.budget });
    const number = el("input", "budget-number");
    Object.assign(number, { type: "number", min: 1, max: 40, value: attachment.budget });
    budgetLabel.append(range, number);
    const detailLabel = el("label", "detail", "Detail ");
    const detail = el("select");
    for (const value of ["auto", "high", "low"]) detail.append(new Option(value, value));
    detailLabel.append(detail);
    controls.append(budgetLabel, detailLabel);
    const preview = el("div", "grid-text", "\u2026");
    card.append(controls, preview);

    const setBudget = (value) => {
      const budget = Math.min(40, Math.max(1, Math.round(Number(value)) || 1));
      attachment.budget = budget;
      range.value = budget;
      number.value = budget;
      updatePreview(attachment);
    };
    range.addEventListener("input", () => setBudget(range.value));
    number.addEventListener("change", () => setBudget(number.value));
    detail.addEventListener("change", () => {
      attachment.detail = detail.value;
      // detail=low means one tile: the budget is not sent then.
      range.disabled = number.disabled = detail.value === "low";
      updatePreview(attachment);
    });
    attachment.gridEl = grid;
    attachment.previewEl = preview;
  }

  function renderVideoCard(attachment) {
    const card = cardShell(attachment);
    const video = el("video");
    Object.assign(video, { src: attachment.url, muted: true, controls: true, preload: "metadata" });
    card.append(video);
    const label = el("label", "frames", "Frames ");
    const frames = el("input");
    Object.assign(frames, { type: "number", min: 1, max: 64, placeholder: "server default" });
    frames.addEventListener("change", () => {
      attachment.numFrames = frames.value ? Math.max(1, Math.round(Number(frames.value))) : null;
    });
    label.append(frames);
    card.append(label, el("div", "grid-text", "one tile per sampled frame"));
  }

  // The image part exactly as it is sent: detail=low carries no budget.
  function imagePart(attachment) {
    const imageUrl = { url: attachment.url, detail: attachment.detail };
    if (attachment.detail !== "low") imageUrl.max_tiles = attachment.budget;
    return { type: "image_url", image_url: imageUrl };
  }

  // The server plans the grid (GET /v1/internvl/tiling, the very code chat requests use).
  async function updatePreview(attachment) {
    const seq = ++attachment.previewSeq;
    const part = imagePart(attachment).image_url;
    const query = new URLSearchParams({ width: attachment.width, height: attachment.height, detail: part.detail });
    if (part.max_tiles !== undefined) query.set("max_tiles", part.max_tiles);
    let plan = null;
    let problem = null;
    try {
      const response = await fetch(`/v1/internvl/tiling?${query}`, { headers: authHeaders() });
      if (response.ok) plan = await response.json();
      else problem = await errorMessage(response);
    } catch (error) {
      problem = `cannot reach the server: ${error.message}`;
    }
    if (seq !== attachment.previewSeq) return; // a newer setting has been asked for meanwhile
    attachment.plan = plan;
    drawGrid(attachment, plan, problem);
  }

  function drawGrid(attachment, plan, problem) {
    const { card, gridEl, previewEl } = attachment;
    gridEl.replaceChildren();
    if (!plan) {
      card.classList.add("has-error");
      card.removeAttribute("data-cols");
      card.removeAttribute("data-rows");
      card.removeAttribute("data-tiles");
      previewEl.textContent = problem;
      return;
    }
    card.classList.remove("has-error");
    card.dataset.cols = plan.cols;
    card.dataset.rows = plan.rows;
    card.dataset.tiles = plan.tiles;
    card.dataset.imageTokens = plan.image_tokens;
    gridEl.style.gridTemplateColumns = `repeat(${plan.cols}, 1fr)`;
    gridEl.style.gridTemplateRows = `repeat(${plan.rows}, 1fr)`;
    for (let i = 0; i < plan.cols * plan.rows; i += 1) gridEl.append(el("div", "cell"));
    const thumbnail = plan.thumbnail ? " + thumbnail" : "";
    previewEl.textContent =
      `${plan.width}\u00d7${plan.height} px \u2192 ${plan.cols}\u00d7${plan.rows} grid${thumbnail} = ` +
      `${plan.tiles} tile${plan.tiles === 1 ? "" : "s"} \u00b7 ${plan.image_tokens} tokens`;
  }

  // ---- Conversation ---------------------------------------------------------

  function numberField(id) {
    const raw = $(id).value.trim();
    return raw === "" ? undefined : Number(raw);
  }

  function extraFields() {
    const raw = $("extra").value.trim();
    if (!raw) return {};
    const parsed = JSON.parse(raw); // a SyntaxError is reported by the caller
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new SyntaxError("extra request fields must be a JSON object");
    }
    return parsed;
  }

  function renderUserTurn(text, attachments) {
    const bubble = el("div", "message user");
    if (attachments.length) {
      const media = el("div", "media");
      for (const attachment of attachments) {
        const item = el(attachment.kind === "image" ? "img" : "video");
        item.src = attachment.url;
        if (attachment.kind === "video") item.controls = true;
        media.append(item);
      }
      bubble.append(media);
    }
    if (text) bubble.append(el("div", "text", text));
    return bubble;
  }

  function scrollToEnd() {
    const transcript = $("transcript");
    transcript.scrollTop = transcript.scrollHeight;
  }

  // Boxes are in pixels of the request's image they name; percentages keep them on it at any display size.
  function drawBoxes(bubble, boxes, images) {
    const figure = el("figure", "grounded");
    const image = images[boxes[0].image_index] || images[images.length - 1];
    const img = el("img");
    img.src = image.url;
    img.alt = "the image the boxes are on";
    fitInto(img, image.width, image.height, FIGURE_BOX, false);
    figure.append(img);
    const palette = ["#ff5a5f", "#00a6a6", "#ffb400", "#7b61ff", "#2bb673"];
    boxes.forEach((box, index) => {
      const [x1, y1, x2, y2] = box.box;
      const frame = el("div", "box");
      Object.assign(frame.style, {
        left: `${(100 * x1) / image.width}%`,
        top: `${(100 * y1) / image.height}%`,
        width: `${(100 * (x2 - x1)) / image.width}%`,
        height: `${(100 * (y2 - y1)) / image.height}%`,
        borderColor: palette[index % palette.length],
      });
      const label = el("span", "box-label", box.label || "(no label)");
      label.style.background = palette[index % palette.length];
      frame.append(label);
      figure.append(frame);
    });
    bubble.append(figure);
  }

  function formatStats(stats) {
    const parts = [];
    if (stats.promptTokens !== undefined) parts.push(`prompt ${stats.promptTokens} tok`);
    parts.push(`${stats.tiles} tile${stats.tiles === 1 ? "" : "s"}${stats.videos ? ` + ${stats.videos} video` : ""}`);
    if (stats.ttftMs !== undefined) parts.push(`TTFT ${(stats.ttftMs / 1000).toFixed(2)} s`);
    if (stats.tokensPerSecond !== undefined) parts.push(`${stats.tokensPerSecond.toFixed(1)} tok/s`);
    if (stats.completionTokens !== undefined) parts.push(`${stats.completionTokens} tok out`);
    if (stats.stopped) parts.push("stopped");
    return parts.join(" \u00b7 ");
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").hidden = !busy;
  }

  async function send() {
    if (state.controller) return;
    const text = $("prompt").value.trim();
    const attachments = state.attachments.slice();
    if (!text && !attachments.length) return;
    if (!state.model) await loadModel();
    if (!state.model) return;

    let extra;
    try {
      extra = extraFields();
    } catch (error) {
      showError(`extra request fields: ${error.message}`);
      return;
    }
    showError("");

    const content = attachments.map((attachment) => {
      if (attachment.kind === "image") return imagePart(attachment);
      const video = { url: attachment.url };
      if (attachment.numFrames) video.num_frames = attachment.numFrames;
      return { type: "video_url", video_url: video };
    });
    if (text) content.push({ type: "text", text });
    const userMessage = { role: "user", content };

    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const turn of state.turns) messages.push(turn.user, { role: "assistant", content: turn.answer });
    messages.push(userMessage);

    const body = { model: state.model, messages, stream: true, stream_options: { include_usage: true } };
    const sampling = {
      temperature: numberField("temperature"),
      top_p: numberField("top-p"),
      max_tokens: numberField("max-tokens"),
    };
    for (const [name, value] of Object.entries(sampling)) if (value !== undefined) body[name] = value;
    Object.assign(body, extra);

    const images = [...state.turns.flatMap((turn) => turn.images), ...attachments.filter((a) => a.kind === "image")];
    const stats = {
      tiles: images.reduce((sum, image) => sum + (image.plan ? image.plan.tiles : 0), 0),
      videos: [...state.turns.flatMap((turn) => turn.videos), ...attachments.filter((a) => a.kind === "video")].length,
    };

    const transcript = $("transcript");
    transcript.querySelector(".empty")?.remove();
    const userBubble = renderUserTurn(text, attachments);
    const answer = el("div", "message assistant streaming");
    const answerText = el("div", "text");
    const statsLine = el("div", "stats", "waiting for the first token\u2026");
    answer.append(answerText, statsLine);
    transcript.append(userBubble, answer);
    scrollToEnd();

    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    const started = performance.now();
    let firstTokenAt;
    let usage = null;
    let boxes = null;
    let streamError = null;
    let accepted = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      accepted = true;
      // The request is in: the composer is free for the next message.
      $("prompt").value = "";
      state.attachments = [];
      $("attachments").replaceChildren();

      for await (const event of serverSentEvents(response.body)) {
        if (event === "[DONE]") break;
        const chunk = JSON.parse(event);
        if (chunk.error) {
          streamError = chunk.error.message;
          continue;
        }
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) {
            if (firstTokenAt === undefined) firstTokenAt = performance.now();
            answerText.textContent += delta.content;
            scrollToEnd();
          }
          if (delta.grounding) boxes = delta.grounding;
        }
      }
    } catch (error) {
      if (error.name === "AbortError") stats.stopped = true;
      else streamError = error.message;
    } finally {
      state.controller = null;
      setBusy(false);
    }
    const finished = performance.now();
    answer.classList.remove("streaming");

    if (!accepted) {
      // Nothing was generated: keep the composer as it was so the request can be fixed and resent.
      userBubble.classList.add("failed");
      answer.classList.add("failed");
      answerText.textContent = stats.stopped ? "stopped before the answer began" : streamError;
      statsLine.remove();
      if (!stats.stopped) showError(streamError);
      return;
    }
    if (streamError) {
      answer.append(el("div", "stream-error", streamError));
      showError(streamError);
    }
    state.turns.push({
      user: userMessage,
      answer: answerText.textContent,
      images: attachments.filter((a) => a.kind === "image"),
      videos: attachments.filter((a) => a.kind === "video"),
    });
    if (firstTokenAt !== undefined) stats.ttftMs = firstTokenAt - started;
    if (usage) {
      stats.promptTokens = usage.prompt_tokens;
      stats.completionTokens = usage.completion_tokens;
      // Decoding speed after the first token (whose wait is the TTFT).
      const decodeSeconds = (finished - firstTokenAt) / 1000;
      if (usage.completion_tokens > 1 && decodeSeconds > 0) {
        stats.tokensPerSecond = (usage.completion_tokens - 1) / decodeSeconds;
      }
    }
    statsLine.textContent = formatStats(stats);
    Object.assign(statsLine.dataset, {
      promptTokens: stats.promptTokens ?? "",
      completionTokens: stats.completionTokens ?? "",
      tiles: stats.tiles,
      ttftMs: stats.ttftMs ?? "",
      tokensPerSecond: stats.tokensPerSecond ?? "",
    });
    if (boxes && boxes.length && images.length) drawBoxes(answer, boxes, images);
    scrollToEnd();
  }

  // SSE over fetch: yields each event's data (the server sends only `data:` lines).
  async function* serverSentEvents(stream) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          const data = block
            .split(/\r?\n/)
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data) yield data;
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  function newConversation() {
    if (state.controller) state.controller.abort();
    state.turns = [];
    const transcript = $("transcript");
    transcript.replaceChildren(el("p", "empty", "New conversation: add images or a video and ask away."));
    showError("");
  }

  // ---- Wiring ---------------------------------------------------------------

  function filesFrom(dataTransfer) {
    if (!dataTransfer) return [];
    if (dataTransfer.files && dataTransfer.files.length) return Array.from(dataTransfer.files);
    return Array.from(dataTransfer.items || [])
      .filter((item) => item.kind === "file")
      .map((item) => item.getAsFile())
      .filter(Boolean);
  }

  function init() {
    const keyField = $("api-key");
    keyField.value = sessionStorage.getItem(KEY_STORAGE) || "";
    keyField.addEventListener("change", () => {
      sessionStorage.setItem(KEY_STORAGE, keyField.value.trim());
      loadModel();
    });

    $("image-input").addEventListener("change", async (event) => {
      await addFiles(Array.from(event.target.files));
      event.target.value = "";
    });
    $("video-input").addEventListener("change", async (event) => {
      await addFiles(Array.from(event.target.files));
      event.target.value = "";
    });

    const composer = $("composer");
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    $("stop").addEventListener("click", () => state.controller && state.controller.abort());
    $("new-chat").addEventListener("click", newConversation);

    // Drops anywhere on the page land in the composer (and never navigate away to the file).
    document.addEventListener("dragover", (event) => {
      event.preventDefault();
      composer.classList.add("dropping");
    });
    document.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) composer.classList.remove("dropping");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      composer.classList.remove("dropping");
      addFiles(filesFrom(event.dataTransfer));
    });
    document.addEventListener("paste", (event) => {
      const files = filesFrom(event.clipboardData);
      if (files.length) {
        event.preventDefault();
        addFiles(files);
      }
    });

    loadModel();
  }

  init();
})();
