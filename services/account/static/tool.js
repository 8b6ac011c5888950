// The developer console's integration test tool (services/account/developer_tool.py).
// On the tool page: build the authorize URL (PKCE S256, state, nonce), open it in a popup, then
// exchange the code here (no client secret: the token service allows that only for the tool's
// callback) and show every step. On the callback page: hand the query to the opener and close.
(function () {
  "use strict";

  function b64url(bytes) {
    let text = "";
    bytes.forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString() {
    return b64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  async function s256(verifier) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    return b64url(new Uint8Array(digest));
  }

  function mask(value) {
    return typeof value === "string" && value.length > 12 ? value.slice(0, 8) + "…(" + value.length + ")" : value;
  }

  function claims(jwt) {
    if (typeof jwt !== "string" || jwt.split(".").length !== 3) return null;
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part + "===".slice((part.length + 3) % 4)), function (c) { return c.charCodeAt(0); });
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function show(id, value) {
    document.getElementById(id).textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  // --- the callback page (in the popup) ----------------------------------------------------------
  if (document.getElementById("tool-callback")) {
    const params = Object.fromEntries(new URLSearchParams(window.location.search));
    if (window.opener) {
      // Delivered only if the opener is this origin: another site that opened the popup gets nothing.
      window.opener.postMessage({ type: "oauth-tool-callback", params: params }, window.location.origin);
      window.close();
    }
    return;
  }

  // --- the tool page ------------------------------------------------------------------------------
  const form = document.getElementById("tool");
  if (!form) return;
  const status = document.getElementById("tool-status");
  let pending = null;

  async function finish(params) {
    const flow = pending;
    pending = null;
    show("step-callback", Object.fromEntries(Object.entries(params).map(function (kv) {
      return [kv[0], kv[0] === "code" ? mask(kv[1]) : kv[1]];
    })));
    if (params.state !== flow.state) {
      status.textContent = form.dataset.stateMismatch;
      return;
    }
    if (!params.code) {
      status.textContent = params.error || "error";
      return;
    }
    const response = await fetch("/api/oauth2/token", {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code: params.code,
        redirect_uri: form.dataset.callback,
        client_id: form.dataset.clientId,
        code_verifier: flow.verifier,
      }),
    });
    const tokens = await response.json();
    const masked = {};
    Object.keys(tokens).forEach(function (k) { masked[k] = /token$/.test(k) ? mask(tokens[k]) : tokens[k]; });
    show("step-token", "HTTP " + response.status + "\n" + JSON.stringify(masked, null, 2));
    if (!response.ok) {
      status.textContent = tokens.error_description || tokens.error;
      return;
    }
    show("step-access-claims", claims(tokens.access_token) || "(not a JWT)");
    const idClaims = claims(tokens.id_token);
    show("step-id-claims", idClaims || "(no id_token: add the openid scope)");
    if (idClaims && idClaims.nonce !== flow.nonce) {
      status.textContent = "nonce mismatch";
      return;
    }
    const userinfo = await fetch("/api/oauth2/userinfo", { headers: { Authorization: "Bearer " + tokens.access_token } });
    show("step-userinfo", "HTTP " + userinfo.status + "\n" + JSON.stringify(await userinfo.json(), null, 2));
    status.textContent = form.dataset.done;
    status.dataset.done = "true";
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin || !event.data || event.data.type !== "oauth-tool-callback") return;
    if (!pending) return;
    finish(event.data.params).catch(function (err) { status.textContent = String(err); });
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const popup = window.open("about:blank", "oauth-test-tool", "width=520,height=720");
    const flow = { state: randomString(), verifier: randomString(), nonce: randomString() };
    const scopes = Array.from(form.querySelectorAll("input[name=scope]:checked")).map(function (i) { return i.value; });
    const url = new URL("/api/oauth2/authorize", window.location.origin);
    url.searchParams.set("client_id", form.dataset.clientId);
    url.searchParams.set("redirect_uri", form.dataset.callback);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("scope", scopes.join(" "));
    url.searchParams.set("state", flow.state);
    url.searchParams.set("code_challenge", await s256(flow.verifier));
    url.searchParams.set("code_challenge_method", "S256");
    if (scopes.indexOf("openid") >= 0) url.searchParams.set("nonce", flow.nonce);
    url.searchParams.set("auto_authorize", form.querySelector("input[name=auto_authorize]").checked ? "true" : "false");
    ["step-callback", "step-token", "step-access-claims", "step-id-claims", "step-userinfo"].forEach(function (id) { show(id, ""); });
    show("step-authorize-url", url.toString());
    delete status.dataset.done;
    if (!popup) {
      status.textContent = form.dataset.blocked;
      return;
    }
    pending = flow;
    status.textContent = form.dataset.waiting;
    popup.location.href = url.toString();
  });
})();
