// The chat web client: plain JavaScript, no build step, no third-party code.
// Everything from the network is rendered with textContent, never as HTML.
"use strict";

(() => {
  const HISTORY_PAGE = 50;
  const GAP_PAGE = 100; // the largest page GET /messages gives
  const GAP_RETRY_MS = 2000;
  const TYPING_SEND_EVERY_MS = 2000;
  const TYPING_SHOW_MS = 4000;
  const ROOMS_POLL_MS = 15000;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // --- session: tokens kept in localStorage, refreshed before they expire -----------------

  const session = {
    load() {
      try {
        return JSON.parse(localStorage.getItem("chat.session")) || null;
      } catch (e) {
        return null;
      }
    },
    save(value) {
      localStorage.setItem("chat.session", JSON.stringify(value));
    },
    clear() {
      localStorage.removeItem("chat.session");
    },
  };

  let auth = session.load(); // {access, refresh, expiresAt, user: {id, username}}
  let refreshTimer = null;
  let refreshing = null;

  function describeErrors(body, status) {
    if (!body || typeof body !== "object") return `Request failed (${status}).`;
    if (typeof body.detail === "string") return body.detail;
    const names = { username: "Username", password: "Password", non_field_errors: "", content: "Message" };
    return Object.entries(body)
      .map(([field, messages]) => {
        const text = Array.isArray(messages) ? messages.join(" ") : String(messages);
        const label = field in names ? names[field] : field;
        return label ? `${label}: ${text}` : text;
      })
      .join(" ");
  }

  async function request(path, { method = "GET", body, form, bearer = true } = {}) {
    const headers = { Accept: "application/json" };
    let payload;
    if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      payload = new URLSearchParams(form).toString();
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    if (bearer && auth) headers.Authorization = `Bearer ${auth.access}`;
    const response = await fetch(path, { method, headers, body: payload, credentials: "omit" });
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
    }
    return { ok: response.ok, status: response.status, data };
  }

  // Call the API with the access token, refreshing it once on a 401.
  async function api(path, options = {}) {
    let result = await request(path, options);
    if (result.status === 401 && auth && options.bearer !== false) {
      if (await refreshTokens()) result = await request(path, options);
    }
    return result;
  }

  function storeTokens(data, user) {
    auth = {
      access: data.access_token,
      refresh: data.refresh_token,
      expiresAt: Date.now() + data.expires_in * 1000,
      user: user || (auth && auth.user),
    };
    session.save(auth);
    scheduleRefresh();
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    if (!auth) return;
    // Refresh at 80% of the lifetime, at the latest a minute before expiry.
    const remaining = auth.expiresAt - Date.now();
    const delay = Math.max(1000, Math.min(remaining * 0.8, remaining - 60000));
    refreshTimer = setTimeout(() => refreshTokens(), delay);
  }

  // One refresh at a time; resolves true when a new pair was stored.
  function refreshTokens() {
    if (!auth) return Promise.resolve(false);
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const result = await request("/token/refresh", {
          method: "POST",
          body: { refresh_token: auth.refresh },
          bearer: false,
        });
        if (result.ok) {
          storeTokens(result.data);
          return true;
        }
        if (result.status === 401) signOut("Your session has ended. Please log in again.");
        return false;
      } catch (e) {
        return false; // network trouble: the socket's backoff will try again
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  // --- sign in / out ------------------------------------------------------------------

  async function logIn(username, password) {
    const result = await request("/token", { method: "POST", form: { username, password }, bearer: false });
    if (!result.ok) throw new Error(describeErrors(result.data, result.status));
    auth = { access: result.data.access_token };
    const me = await request("/users/me");
    storeTokens(result.data, me.ok ? { id: me.data.id, username: me.data.username } : { id: null, username });
  }

  async function register(username, password) {
    const result = await request("/register", { method: "POST", body: { username, password }, bearer: false });
    if (!result.ok) throw new Error(describeErrors(result.data, result.status));
    await logIn(username, password);
  }

  function signOut(notice) {
    const old = auth;
    auth = null;
    session.clear();
    clearTimeout(refreshTimer);
    leaveRoom();
    if (old) {
      fetch("/logout", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${old.access}` },
        body: JSON.stringify({ refresh_token: old.refresh }),
        credentials: "omit",
      }).catch(() => {});
    }
    showSignedOut(notice || "");
  }

  function showSignedOut(notice) {
    $("app").hidden = true;
    $("whoami").hidden = true;
    $("auth").hidden = false;
    $("auth-error").textContent = "";
    $("auth-notice").textContent = notice;
    setStatus("signed out");
    $("auth-password").value = "";
    $("auth-username").focus();
  }

  function showSignedIn() {
    $("auth").hidden = true;
    $("app").hidden = false;
    $("whoami").hidden = false;
    $("whoami-name").textContent = auth.user ? auth.user.username : "";
    setStatus("online");
    loadRooms();
  }

  function setStatus(text) {
    $("status").textContent = text;
    $("status").dataset.state = text.replace(/[^a-z]/g, "");
  }

  // --- rooms list ----------------------------------------------------------------------

  let roomsTimer = null;

  async function loadRooms() {
    clearTimeout(roomsTimer);
    try {
      const result = await request("/rooms", { bearer: false });
      if (result.ok) renderRooms(result.data.rooms);
    } catch (e) {
      /* offline: try again later */
    }
    if (auth) roomsTimer = setTimeout(loadRooms, ROOMS_POLL_MS);
  }

  function renderRooms(rooms) {
    const list = $("rooms");
    list.replaceChildren();
    for (const room of rooms) {
      const item = el("li", "room-item");
      const button = el("button", "room-link", room.name);
      button.type = "button";
      button.dataset.room = room.name;
      if (current && current.name === room.name) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openRoom(room.name, room.title));
      const online = current && current.name === room.name && current.socket ? current.online.size : room.online;
      const count = el("span", "room-online", `${online} online`);
      count.dataset.room = room.name;
      count.setAttribute("aria-hidden", "true");
      item.append(button, count);
      if (room.title) item.title = room.title;
      list.append(item);
    }
  }

  // --- a room: history, live socket, sending --------------------------------------------

  let current = null; // state of the open room

  function newRoomState(name) {
    return {
      name,
      bySeq: new Map(), // seq -> <li>, so nothing shows twice
      lastSeq: null, // highest seq seen; since= on reconnect
      gaps: [], // {after, before}: seq ranges the socket skipped, paged in over REST
      filling: false,
      gapTimer: null,
      connecting: false, // a connect() is fetching its ticket or opening its socket
      oldestSeq: null,
      socket: null,
      attempt: 0,
      reconnectTimer: null,
      online: new Map(), // user id -> username
      typing: new Map(), // username -> timer
      pending: new Map(), // client_id -> {content, node}
      lastTypingSent: 0,
      closed: false,
    };
  }

  function leaveRoom() {
    if (!current) return;
    current.closed = true;
    clearTimeout(current.reconnectTimer);
    clearTimeout(current.gapTimer);
    for (const timer of current.typing.values()) clearTimeout(timer);
    if (current.socket) current.socket.close(1000);
    current = null;
  }

  async function openRoom(name, title) {
    leaveRoom();
    current = newRoomState(name);
    const room = current;
    $("room-title").textContent = title ? `${title} (#${name})` : `#${name}`;
    $("room-body").hidden = false;
    $("messages").replaceChildren();
    $("online").replaceChildren();
    $("typing").textContent = "";
    $("send-error").textContent = "";
    for (const button of document.querySelectorAll(".room-link")) {
      if (button.dataset.room === name) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    const result = await api(`/messages/${encodeURIComponent(name)}?limit=${HISTORY_PAGE}`);
    if (room !== current) return;
    if (result.ok) {
      for (const message of result.data.slice().reverse()) addMessage(message);
      $("load-older").hidden = result.data.length < HISTORY_PAGE;
      if (room.lastSeq === null) room.lastSeq = 0;
    } else {
      $("send-error").textContent = describeErrors(result.data, result.status);
    }
    connect(room);
    $("message-input").focus();
  }

  async function loadOlder() {
    const room = current;
    if (!room || room.oldestSeq === null) return;
    const before = room.oldestSeq;
    const result = await api(
      `/messages/${encodeURIComponent(room.name)}?limit=${HISTORY_PAGE}&before=${before}`
    );
    if (room !== current || !result.ok) return;
    for (const message of result.data) addMessage(message);
    if (result.data.length < HISTORY_PAGE) $("load-older").hidden = true;
  }

  // Each connection asks for a single-use ticket, so the access token never appears in a URL.
  async function connect(room) {
    // One connection at a time: a reconnect timer and the browser's "online" event may both ask.
    if (room.closed || !auth || room.connecting || room.socket) return;
    room.connecting = true;
    try {
      await openSocket(room);
    } finally {
      room.connecting = false;
    }
  }

  async function openSocket(room) {
    setStatus(room.attempt ? "reconnecting…" : "connecting…");
    let ticket;
    try {
      const result = await api("/ws-ticket", { method: "POST" });
      if (!result.ok) throw new Error(`ticket ${result.status}`);
      ticket = result.data.ticket;
    } catch (e) {
      if (auth) scheduleReconnect(room);
      return;
    }
    if (room.closed || room !== current) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const since = room.lastSeq === null ? "" : `&since=${room.lastSeq}`;
    const url = `${scheme}://${location.host}/ws/${encodeURIComponent(room.name)}?ticket=${encodeURIComponent(
      ticket
    )}${since}`;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (e) {
      scheduleReconnect(room);
      return;
    }
    room.socket = socket;
    socket.addEventListener("open", () => {
      if (room !== current) return;
      room.attempt = 0;
      setStatus("connected");
      resendPending(room);
    });
    socket.addEventListener("message", (event) => {
      if (room !== current) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handleEvent(room, data);
    });
    socket.addEventListener("close", (event) => onClose(room, socket, event.code));
  }

  async function onClose(room, socket, code) {
    if (room.socket !== socket) return;
    room.socket = null;
    if (room.closed || room !== current) return;
    if (code === 4003) {
      signOut("Your account has been deactivated.");
      return;
    }
    if (code === 4004) {
      setStatus("offline");
      $("send-error").textContent = "This room no longer exists.";
      return;
    }
    setStatus("reconnecting…");
    if (code === 4001) {
      const refreshed = await refreshTokens();
      if (!refreshed && !auth) return;
    }
    scheduleReconnect(room);
  }

  function scheduleReconnect(room) {
    if (room.closed) return;
    const base = BACKOFF_MS[Math.min(room.attempt, BACKOFF_MS.length - 1)];
    room.attempt += 1;
    const delay = base / 2 + Math.random() * base;
    clearTimeout(room.reconnectTimer);
    room.reconnectTimer = setTimeout(() => connect(room), delay);
  }

  function handleEvent(room, data) {
    switch (data.type) {
      case "presence":
        room.online = new Map(data.users.map((u) => [u.id, u.username]));
        renderOnline(room);
        break;
      case "message":
        receiveMessage(room, data);
        clearTyping(room, data.user.username);
        break;
      case "join":
        room.online.set(data.user.id, data.user.username);
        renderOnline(room);
        addNotice(`${data.user.username} joined`);
        break;
      case "leave":
        room.online.delete(data.user.id);
        renderOnline(room);
        addNotice(`${data.user.username} left`);
        break;
      case "typing":
        showTyping(room, data.user.username);
        break;
      case "replay_truncated":
        // More was missed than the server replays: page the rest, up to the room's newest message then.
        addGap(room, data.replayed_to, data.last_seq + 1);
        break;
      case "message_deleted":
        // The seq stays known, so a later replay cannot bring the message back.
        if (room.bySeq.has(data.seq)) room.bySeq.get(data.seq).remove();
        break;
      case "error":
        onSendError(room, data);
        break;
      default:
        break; // events this client does not know are ignored
    }
  }

  // A message past lastSeq + 1 means some were skipped: what a cut replay left out, should its
  // replay_truncated event be missed. (A deleted message leaves a hole in seq too: its page comes
  // back empty, and the gap is done.)
  function receiveMessage(room, message) {
    const after = room.lastSeq;
    addMessage(message);
    if (after !== null && message.seq > after + 1) addGap(room, after, message.seq);
  }

  // Page in the messages after `after` and before `before`.
  function addGap(room, after, before) {
    room.gaps.push({ after, before });
    fillGaps(room);
  }

  // One gap at a time, oldest first, a page at a time; live messages keep arriving meanwhile and
  // every message is placed by seq, so the order holds whatever comes first.
  async function fillGaps(room) {
    if (room.filling) return;
    room.filling = true;
    clearTimeout(room.gapTimer);
    try {
      while (room === current && room.gaps.length) {
        const gap = room.gaps[0];
        while (room.bySeq.has(gap.after + 1)) gap.after += 1; // already shown, live or by an earlier page
        if (gap.after + 1 >= gap.before) {
          room.gaps.shift();
          continue;
        }
        const page = await fetchGapPage(room, gap);
        if (room !== current) return;
        if (page === null) {
          room.gapTimer = setTimeout(() => fillGaps(room), GAP_RETRY_MS);
          return;
        }
        for (const message of page) addMessage(message);
        if (page.length < GAP_PAGE) room.gaps.shift();
        else gap.after = page[page.length - 1].seq;
      }
    } finally {
      room.filling = false;
    }
  }

  // The messages after gap.after and before gap.before, oldest first; null to try again later (no
  // network, 429, a server error); [] when asking again cannot help (the room is gone, a refusal).
  async function fetchGapPage(room, gap) {
    const query = `after=${gap.after}&before=${gap.before}&limit=${GAP_PAGE}`;
    try {
      const result = await api(`/messages/${encodeURIComponent(room.name)}?${query}`);
      if (result.ok) return result.data;
      return result.status === 429 || result.status >= 500 ? null : [];
    } catch (e) {
      return null;
    }
  }

  function renderOnline(room) {
    const list = $("online");
    list.replaceChildren();
    const names = [...room.online.values()].sort((a, b) => a.localeCompare(b));
    for (const name of names) {
      const item = el("li", "online-user", name);
      if (auth && auth.user && name === auth.user.username) item.classList.add("own");
      list.append(item);
    }
    for (const count of document.querySelectorAll(".room-online")) {
      if (count.dataset.room === room.name) count.textContent = `${room.online.size} online`;
    }
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageNode(message) {
    const own = auth && auth.user && message.user.id === auth.user.id;
    const item = el("li", own ? "message own" : "message");
    item.dataset.seq = String(message.seq);
    const meta = el("div", "meta");
    meta.append(el("span", "author", own ? `${message.user.username} (you)` : message.user.username));
    const time = el("time", "time", formatTime(message.timestamp));
    time.dateTime = message.timestamp;
    meta.append(time);
    item.append(meta, el("p", "content", message.content));
    return item;
  }

  // Insert by seq: history, replay and live messages may arrive in any order, each shows once.
  function addMessage(message) {
    const room = current;
    if (!room || message.room !== room.name) return;
    if (message.client_id && room.pending.has(message.client_id)) {
      room.pending.get(message.client_id).node.remove();
      room.pending.delete(message.client_id);
    }
    if (room.bySeq.has(message.seq)) return;
    const node = messageNode(message);
    const list = $("messages");
    const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    let next = null;
    for (const [seq, other] of room.bySeq) {
      if (seq > message.seq && (next === null || seq < Number(next.dataset.seq))) next = other;
    }
    list.insertBefore(node, next || list.querySelector(".message.pending"));
    room.bySeq.set(message.seq, node);
    room.lastSeq = room.lastSeq === null ? message.seq : Math.max(room.lastSeq, message.seq);
    room.oldestSeq = room.oldestSeq === null ? message.seq : Math.min(room.oldestSeq, message.seq);
    if (stickToBottom || (auth && auth.user && message.user.id === auth.user.id)) list.scrollTop = list.scrollHeight;
  }

  function addNotice(text) {
    const list = $("messages");
    const node = el("li", "notice", text);
    list.insertBefore(node, list.querySelector(".message.pending"));
    list.scrollTop = list.scrollHeight;
  }

  function showTyping(room, username) {
    clearTimeout(room.typing.get(username));
    room.typing.set(
      username,
      setTimeout(() => clearTyping(room, username), TYPING_SHOW_MS)
    );
    renderTyping(room);
  }

  function clearTyping(room, username) {
    if (!room.typing.has(username)) return;
    clearTimeout(room.typing.get(username));
    room.typing.delete(username);
    renderTyping(room);
  }

  function renderTyping(room) {
    if (room !== current) return;
    const names = [...room.typing.keys()];
    $("typing").textContent =
      names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  function newClientId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function sendFrame(room, frame) {
    if (room.socket && room.socket.readyState === WebSocket.OPEN) {
      room.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // A send is shown at once as pending; it is kept and sent again with the same client_id
  // after a reconnect, so it is stored exactly once.
  function sendMessage() {
    const room = current;
    const input = $("message-input");
    const content = input.value;
    if (!room || !content.trim()) return;
    $("send-error").textContent = "";
    const clientId = newClientId();
    const node = messageNode({
      seq: -1,
      user: auth.user || { id: null, username: "you" },
      content,
      timestamp: new Date().toISOString(),
    });
    node.classList.add("own", "pending");
    node.removeAttribute("data-seq");
    $("messages").append(node);
    $("messages").scrollTop = $("messages").scrollHeight;
    room.pending.set(clientId, { content, node });
    sendFrame(room, { type: "message", content, client_id: clientId });
    input.value = "";
    room.lastTypingSent = 0; // the others cleared the notice on this message; the next keystroke says so again
  }

  function resendPending(room) {
    for (const [clientId, { content }] of room.pending) {
      sendFrame(room, { type: "message", content, client_id: clientId });
    }
  }

  function onSendError(room, data) {
    if (data.client_id && room.pending.has(data.client_id)) {
      const { content, node } = room.pending.get(data.client_id);
      node.remove();
      room.pending.delete(data.client_id);
      if (data.code === "unavailable" || data.code === "rate_limited") $("message-input").value = content;
    }
    $("send-error").textContent = data.detail || "The message was not sent.";
  }

  function onTypingInput() {
    const room = current;
    if (!room) return;
    const now = Date.now();
    if (now - room.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (sendFrame(room, { type: "typing" })) room.lastTypingSent = now;
  }

  // --- wiring --------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("auth-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const action = event.submitter ? event.submitter.value : "login";
      const username = $("auth-username").value.trim();
      const password = $("auth-password").value;
      $("auth-error").textContent = "";
      $("auth-notice").textContent = "";
      if (!username || !password) {
        $("auth-error").textContent = "Enter a username and a password.";
        return;
      }
      for (const button of document.querySelectorAll(".auth-buttons button")) button.disabled = true;
      try {
        if (action === "register") await register(username, password);
        else await logIn(username, password);
        showSignedIn();
      } catch (error) {
        $("auth-error").textContent =
          error instanceof TypeError ? "The server cannot be reached. Try again." : error.message;
      } finally {
        for (const button of document.querySelectorAll(".auth-buttons button")) button.disabled = false;
      }
    });
    $("logout").addEventListener("click", () => signOut("You are logged out."));
    $("load-older").addEventListener("click", loadOlder);
    $("send-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sendMessage();
    });
    $("message-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        sendMessage();
      }
    });
    $("message-input").addEventListener("input", onTypingInput);
    window.addEventListener("online", () => {
      if (current && !current.socket) {
        clearTimeout(current.reconnectTimer); // connect now instead of at the end of the backoff
        current.attempt = 0;
        connect(current);
      }
    });

    if (auth && auth.refresh) {
      // A failed refresh for lack of network keeps the session; a refused one signs out.
      refreshTokens().then(() => {
        if (auth) showSignedIn();
      });
    } else {
      showSignedOut("");
    }
  });
})();
