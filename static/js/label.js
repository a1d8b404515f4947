// The labelling page, keyboard first.
//
// The page holds the card on screen plus the next one, already fetched
// (`ready`). A label swaps the next card in at once and posts in the
// background; the answer to that post is the card after it. Requests run one
// after another (`chain`) so the server always knows which cards the page
// holds (`exclude`) and never hands one of them out twice. Without this
// script every card is a plain form that posts and comes back (no-JS path).
(function () {
  "use strict";

  const stage = document.getElementById("label-stage");
  if (!stage) return;
  const urls = {
    card: stage.dataset.cardUrl,
    submit: stage.dataset.submitUrl,
    release: stage.dataset.releaseUrl,
  };
  const csrf = stage.dataset.csrf;
  const alertBox = document.getElementById("label-alert");
  const help = document.getElementById("label-help");

  let current = stage.querySelector(".label-card");
  let shownAt = performance.now();
  const ready = []; // cards to show next, in order
  const inFlight = new Set(); // item ids whose answer is queued or being sent
  const unsent = new Set(); // submit bodies not sent yet (sent by beacon if the page closes)
  let waiting = false; // the card on screen is the "loading" placeholder
  let flagging = false; // a flag of the card on screen is being sent
  // Whether the annotator has an answer to undo; every card the page shows
  // offers "undo" only then (cards fetched ahead were rendered before it).
  let canUndo = stage.dataset.canUndo === "1";
  let chain = Promise.resolve();

  const isEmpty = (card) => !card || card.dataset.empty === "1";
  const isReal = (card) => card && card.dataset.sample && !card.classList.contains("is-loading");

  function heldItems() {
    const ids = new Set(inFlight);
    [current, ...ready].forEach((card) => {
      if (card && card.dataset.item) ids.add(card.dataset.item);
    });
    return [...ids];
  }

  function parse(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return {
      card: t.content.querySelector(".label-card"),
      progress: t.content.querySelector("#label-progress"),
      messages: t.content.querySelector(".label-messages"),
    };
  }

  function say(text, kind) {
    alertBox.textContent = text;
    alertBox.classList.toggle("is-info", kind === "info");
    alertBox.hidden = !text;
  }

  function showUndo(card) {
    card.querySelectorAll(".label-undo").forEach((link) => {
      link.hidden = !canUndo;
    });
  }

  function show(card) {
    showUndo(card);
    current.replaceWith(card);
    current = card;
    waiting = false;
    shownAt = performance.now();
    if (document.activeElement && !document.body.contains(document.activeElement)) {
      document.body.focus();
    }
  }

  function placeholder() {
    const card = document.createElement("article");
    card.className = "label-card is-loading";
    card.setAttribute("aria-busy", "true");
    card.textContent = "Loading the next sample…";
    return card;
  }

  // Take what a response brought: progress, messages, and a card.
  function absorb(html) {
    const parts = parse(html);
    if (parts.progress) document.getElementById("label-progress").replaceWith(parts.progress);
    if (parts.messages) say(parts.messages.textContent.trim(), "info");
    if (!parts.card) return;
    if (waiting || isEmpty(current)) {
      show(parts.card);
    } else if (!isEmpty(parts.card)) {
      // A real card beats an "empty queue" card fetched before it appeared.
      ready.splice(0, ready.length, ...ready.filter((card) => !isEmpty(card)), parts.card);
    } else if (ready.length === 0) {
      ready.push(parts.card);
    }
  }

  function enqueue(task) {
    chain = chain.then(task).catch(async (error) => {
      say(String(error.message || error));
      // Never leave the annotator on the loading card: ask for a fresh one.
      if (waiting) {
        try {
          await refill();
        } catch (again) {
          say(`${error.message || error} Reload the page to continue.`);
        }
      }
    });
    return chain;
  }

  async function refill() {
    const next = new URLSearchParams();
    heldItems().forEach((id) => next.append("exclude", id));
    absorb(await (await send("GET", `${urls.card}?${next}`)).text());
  }

  async function send(method, url, body) {
    const response = await fetch(url, {
      method,
      body,
      credentials: "same-origin",
      headers: { "HX-Request": "true", "X-CSRFToken": csrf },
      keepalive: method === "POST",
    });
    if (!response.ok) {
      const text = (await response.text()).slice(0, 300);
      throw new Error(text || `The server answered ${response.status}.`);
    }
    return response;
  }

  // Move on from the card on screen before the server has answered.
  function advance() {
    const next = ready.shift();
    if (next) show(next);
    else {
      show(placeholder());
      waiting = true;
    }
  }

  function answer(fields) {
    if (!isReal(current) || waiting || flagging) return;
    const card = current;
    canUndo = true; // sent before any undo asks (the chain keeps the order)
    const body = new FormData();
    body.set("csrfmiddlewaretoken", csrf);
    body.set("sample", card.dataset.sample);
    body.set("seconds", ((performance.now() - shownAt) / 1000).toFixed(2));
    Object.entries(fields).forEach(([key, value]) => body.set(key, value));
    const item = card.dataset.item;
    if (item) inFlight.add(item);
    unsent.add(body);
    advance();
    enqueue(async () => {
      // Decided now, not at the key press: by now earlier answers have
      // brought their cards.
      if (waiting || ready.length === 0) body.set("want_card", "1");
      heldItems().forEach((id) => body.append("exclude", id));
      unsent.delete(body);
      try {
        absorb(await (await send("POST", urls.submit, body)).text());
      } finally {
        if (item) inFlight.delete(item);
      }
    });
  }

  function undo() {
    if (current.dataset.relabel || flagging || !canUndo) return;
    enqueue(async () => {
      const response = await send("GET", `${urls.card}?undo=1`);
      if (response.status === 204) {
        say("Nothing to undo yet.", "info");
        return;
      }
      const parts = parse(await response.text());
      if (!parts.card) return;
      if (isReal(current)) ready.unshift(current);
      show(parts.card);
    });
  }

  // A flag waits for the server's answer before moving on: when it is
  // refused (say, an unknown "duplicate of" id) the annotator stays on the
  // sample, and the answer is its card again with the form as sent and why.
  function flag(form) {
    if (!isReal(current) || waiting || flagging) return;
    const card = current;
    const body = new FormData(form);
    flagging = true;
    say("");
    enqueue(async () => {
      try {
        // After a flag the page shows its next ready card; the answer brings
        // one only when none is ready.
        const next = new URLSearchParams({ after_flag: card.dataset.sample });
        if (ready.length > 0) next.set("card", "0");
        heldItems().forEach((id) => next.append("exclude", id));
        body.set("next", `${urls.card}?${next}`);
        const response = await fetch(form.action, {
          method: "POST",
          body,
          credentials: "same-origin",
          headers: { "HX-Request": "true", "X-CSRFToken": csrf },
        });
        if (response.status === 400) {
          const parts = parse(await response.text());
          if (!parts.card || current !== card) throw new Error("Not flagged.");
          const at = shownAt;
          show(parts.card);
          shownAt = at;
          const bad = current.querySelector(".flag-form [aria-invalid=true]");
          const focus = bad && bad.matches("input") ? bad : current.querySelector(".flag-form input[name=kind]:checked");
          if (focus) focus.focus();
          const why = current.querySelector(".flag-form [role=alert]");
          if (why) why.scrollIntoView({ block: "nearest" });
          return;
        }
        if (!response.ok) {
          const text = (await response.text()).slice(0, 300);
          throw new Error(text || `The server answered ${response.status}.`);
        }
        // The flag view redirects to `next`: the card partial after this one.
        const html = await response.text();
        if (current === card) advance();
        absorb(html);
      } finally {
        flagging = false;
      }
    });
  }

  function openFlag() {
    const details = current.querySelector(".label-flag");
    if (!details) return;
    details.open = true;
    const first = details.querySelector("input[name=kind]");
    if (first) first.focus();
  }

  function closeOverlays() {
    help.hidden = true;
    const details = current.querySelector(".label-flag[open]");
    if (details) details.open = false;
    if (document.activeElement) document.activeElement.blur();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (key === "Escape") {
      closeOverlays();
      return;
    }
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (event.repeat) return; // holding a key down must not label a run of samples
    if (key === "?") {
      help.hidden = !help.hidden;
    } else if (!help.hidden) {
      return;
    } else if (key === "s") {
      answer({ skip: "1" });
    } else if (key === "f") {
      openFlag();
    } else if (key === "z") {
      undo();
    } else {
      const button = [...current.querySelectorAll(".label-button")].find((b) =>
        b.dataset.keys.split(" ").includes(key),
      );
      if (!button) return;
      answer({ label: button.value });
    }
    event.preventDefault();
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!current.contains(form)) return;
    if (form.classList.contains("label-form")) {
      event.preventDefault();
      const button = event.submitter;
      if (button && button.name) answer({ [button.name]: button.value });
    } else if (form.classList.contains("flag-form")) {
      event.preventDefault();
      flag(form);
    }
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest(".label-undo") && current.contains(event.target)) {
      event.preventDefault();
      undo();
    } else if (event.target.closest(".label-help-close") || event.target === help) {
      help.hidden = true;
    }
  });

  // Leaving the page: answers not sent yet go out as beacons (never lose a
  // label), and the leases of cards the page held go back to the queue.
  window.addEventListener("pagehide", () => {
    unsent.forEach((body) => navigator.sendBeacon(urls.submit, body));
    unsent.clear();
    const release = new FormData();
    release.set("csrfmiddlewaretoken", csrf);
    [current, ...ready].forEach((card) => {
      if (card.dataset.item && !inFlight.has(card.dataset.item)) release.append("item", card.dataset.item);
    });
    if (release.has("item")) navigator.sendBeacon(urls.release, release);
  });
  // Back from the back/forward cache: the released cards are stale.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  showUndo(current);
  // Fetch the card after the one on screen.
  if (isReal(current) && !current.dataset.relabel) enqueue(refill);
})();
