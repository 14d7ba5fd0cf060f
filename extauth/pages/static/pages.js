// extauth's pages: unlinking, and the device flow (RFC 8628) polled from the page.
// The session is the HttpOnly cookie; this script only calls the JSON API.
"use strict";

const API = "/api/v2/external-auth";

async function answer(response) {
  let body = null;
  if (response.status !== 204) {
    try { body = await response.json(); } catch (e) { body = null; }
  }
  return { status: response.status, body, headers: response.headers };
}

function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(API + path, init).then(answer);
}

function say(body, fallback) {
  if (!body || !body.message) return fallback;
  return body.detail ? `${body.message} ${body.detail}` : body.message;
}

// -- unlink: ask once, then say whether the token was revoked ----------------

function setUpUnlink(box) {
  const id = box.dataset.provider;
  const name = box.dataset.name;
  const start = box.querySelector('[data-action="unlink"]');
  const confirm = box.querySelector(".confirm");
  const yes = box.querySelector('[data-action="unlink-confirm"]');
  const no = box.querySelector('[data-action="unlink-cancel"]');
  const result = box.querySelector(".result");
  start.addEventListener("click", () => {
    start.hidden = true;
    confirm.hidden = false;
    yes.focus();
  });
  no.addEventListener("click", () => {
    confirm.hidden = true;
    start.hidden = false;
    start.focus();
  });
  yes.addEventListener("click", async () => {
    yes.disabled = no.disabled = true;
    const r = await call("DELETE", `/${encodeURIComponent(id)}`);
    if (r.status === 401) { window.location.reload(); return; }
    confirm.hidden = true;
    if (r.status !== 200) {
      start.hidden = false;
      yes.disabled = no.disabled = false;
      result.textContent = say(r.body, `Unlinking failed (HTTP ${r.status}).`);
      return;
    }
    let text = `Unlinked ${name}. `;
    if (r.body.token_revoked) {
      text += "The token was revoked at the provider.";
    } else if (r.body.token_revocation_error) {
      text += `The token was not revoked at the provider: ${r.body.token_revocation_error}`;
    } else {
      text += "The token was not revoked: the provider offers no revocation.";
    }
    result.textContent = text;
    const card = box.closest(".provider");
    if (card) {
      const state = card.querySelector(".state");
      state.textContent = "Not linked";
      state.className = "state";
      const link = card.querySelector("[data-after-unlink]");
      if (link) link.hidden = false;
    } else {
      const again = document.createElement("a");
      again.className = "button primary";
      again.href = window.location.pathname;
      again.textContent = "Link again";
      box.appendChild(again);
    }
  });
}

// -- the device flow ---------------------------------------------------------------

function setUpDevice(box, id) {
  const name = box.dataset.displayName;
  const startButtons = box.querySelector(".actions");
  const start = box.querySelector('[data-action="device-start"]');
  const flow = box.querySelector(".device-flow");
  const link = flow.querySelector(".verification");
  const code = flow.querySelector(".user-code");
  const copied = flow.querySelector(".copied");
  const waiting = flow.querySelector(".waiting");
  const countdown = flow.querySelector(".countdown");
  const failure = box.querySelector(".device-error");
  const retry = box.querySelector('[data-action="device-retry"]');
  const waitingText = `Waiting for you to approve at ${name}…`;
  let timers = [];

  function stop() { timers.forEach(clearTimeout); timers = []; }

  function fail(message) {
    stop();
    flow.hidden = true;
    startButtons.hidden = true;
    failure.querySelector(".message").textContent = message;
    failure.hidden = false;
    retry.focus();
  }

  function tick(deadline) {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const m = Math.floor(left / 60);
    const s = String(left % 60).padStart(2, "0");
    countdown.textContent = `The code expires in ${m}:${s}.`;
    if (left === 0) {
      fail("The one-time code has expired. Try again to get a new one.");
      return;
    }
    timers.push(setTimeout(() => tick(deadline), 1000));
  }

  function poll(deviceCode, interval, deadline) {
    timers.push(setTimeout(async () => {
      if (Date.now() >= deadline) return;
      let r;
      try {
        r = await call("POST", `/${encodeURIComponent(id)}/device`, { device_code: deviceCode });
      } catch (e) {
        poll(deviceCode, interval, deadline);  // the network blinked: keep polling
        return;
      }
      if (r.status === 204) {
        stop();
        waiting.textContent = `Linked with ${name}.`;
        window.location.replace(window.location.pathname);
        return;
      }
      if (r.status === 401) { window.location.reload(); return; }
      const detail = r.body && r.body.detail;
      if (r.status === 502 || r.status === 503) {
        // The provider (or the database) blinked: the code may still be approved.
        waiting.textContent = `${say(r.body, `${name} did not answer.`)} Still trying…`;
        poll(deviceCode, Math.min(interval * 2, 60), deadline);
        return;
      }
      waiting.textContent = waitingText;
      if (r.status === 400 && detail === "authorization_pending") {
        poll(deviceCode, interval, deadline);
      } else if (r.status === 400 && detail === "slow_down") {
        // RFC 8628 3.5: add 5 seconds, or what the provider asked for.
        const asked = parseInt(r.headers.get("Retry-After") || "0", 10) || 0;
        poll(deviceCode, Math.max(interval + 5, asked), deadline);
      } else if (r.status === 429) {
        const asked = parseInt(r.headers.get("Retry-After") || "0", 10) || 0;
        poll(deviceCode, Math.max(interval, asked), deadline);
      } else if (detail === "expired_token") {
        fail("The one-time code has expired. Try again to get a new one.");
      } else if (detail === "access_denied") {
        fail(`Access to ${name} was denied.`);
      } else {
        fail(say(r.body, `Linking failed (HTTP ${r.status}).`));
      }
    }, interval * 1000));
  }

  async function begin() {
    stop();
    failure.hidden = true;
    start.disabled = true;
    let r;
    try {
      r = await call("GET", `/${encodeURIComponent(id)}/device`);
    } catch (e) {
      start.disabled = false;
      fail(`${name} could not be reached. Try again.`);
      return;
    }
    start.disabled = false;
    if (r.status === 401) { window.location.reload(); return; }
    if (r.status !== 200) {
      fail(say(r.body, `Starting the device flow failed (HTTP ${r.status}).`));
      return;
    }
    const device = r.body;
    startButtons.hidden = true;
    link.href = device.verification_uri;
    link.textContent = device.verification_uri;
    code.textContent = device.user_code;
    copied.textContent = "";
    waiting.textContent = waitingText;
    flow.hidden = false;
    link.focus();
    const deadline = Date.now() + device.expires_in * 1000;
    tick(deadline);
    poll(device.device_code, Math.max(1, device.interval || 5), deadline);
  }

  start.addEventListener("click", begin);
  retry.addEventListener("click", begin);
  flow.querySelector('[data-action="copy"]').addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      copied.textContent = "Copied.";
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(code);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      copied.textContent = "Selected: press Ctrl+C to copy.";
    }
  });
}

document.querySelectorAll(".unlink").forEach(setUpUnlink);
const page = document.querySelector(".provider-page");
const device = document.querySelector(".device");
if (page && device) setUpDevice(device, page.dataset.provider);
