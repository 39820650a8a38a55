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
  const NEWER_TOKENS_WAIT_MS = 2000;
  const NO_NETWORK = "no network";
  const RENEWAL_TIMEOUT_MS = 10000;
  const MAX_SHOWN = 1000; // items of the conversation kept on the page
  const SHOWN_AFTER_TRIM = 800;

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // --- session: tokens kept in localStorage, refreshed before they expire -----------------

  const SESSION_KEY = "chat.session";
  const session = {
    load() {
      try {
        return JSON.parse(localStorage.getItem(SESSION_KEY)) || null;
      } catch (e) {
        return null;
      }
    },
    save(value) {
      localStorage.setItem(SESSION_KEY, JSON.stringify(value));
    },
    clear() {
      localStorage.removeItem(SESSION_KEY);
    },
  };

  let auth = session.load(); // {access, refresh, expiresAt, user: {id, username}}
  let refreshTimer = null;
  let refreshing = null;
  let epoch = 0; // bumped at every sign-out, so late answers for the old session are dropped

  function describeErrors(body, status) {
    if (!body || typeof body !== "object") return `Request failed (${status}).`;
    if (typeof body.detail === "string") return body.detail;
    const names = {
      username: "Username",
      password: "Password",
      non_field_errors: "",
      content: "Message",
      name: "Name",
      title: "Title",
    };
    return Object.entries(body)
      .map(([field, messages]) => {
        const text = Array.isArray(messages) ? messages.join(" ") : String(messages);
        const label = field in names ? names[field] : field;
        return label ? `${label}: ${text}` : text;
      })
      .join(" ");
  }

  // `token` sends that access token instead of the session's (a request outliving its session).
  async function request(path, { method = "GET", body, form, bearer = true, token } = {}) {
    const headers = { Accept: "application/json" };
    let payload;
    if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      payload = new URLSearchParams(form).toString();
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const access = token || (auth && auth.access);
    if (bearer && access) headers.Authorization = `Bearer ${access}`;
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
    if (result.status === 401 && auth && options.bearer !== false && !options.token) {
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
    if (current) renewSocket(current);
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    if (!auth) return;
    // Refresh at 80% of the lifetime: what is left is the open socket's time to be renewed.
    const remaining = auth.expiresAt - Date.now();
    const delay = Math.max(1000, remaining * 0.8);
    refreshTimer = setTimeout(() => refreshTokens(), delay);
  }

  const sameUser = (a, b) => Boolean(a && b && a.user && b.user && a.user.id === b.user.id);

  // Other tabs share localStorage: a refresh there revokes the refresh token this tab holds, so
  // take the pair they stored. True when a newer pair of this user was taken.
  function adoptStoredTokens() {
    const stored = session.load();
    if (!auth || !stored || !sameUser(stored, auth) || stored.refresh === auth.refresh) return false;
    auth = stored;
    scheduleRefresh();
    if (current) renewSocket(current);
    return true;
  }

  // A refresh refused because another tab rotated the token first: another process's write to
  // localStorage reaches this tab a moment later, so wait a little for its pair before giving up.
  async function newerTokensArrive(stale) {
    for (let waited = 0; waited <= NEWER_TOKENS_WAIT_MS; waited += 100) {
      adoptStoredTokens();
      if (!auth) return false;
      if (auth.refresh !== stale) return true;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return false;
  }

  // Tabs refresh one at a time (the refresh token rotates): the second one finds the first's pair.
  function withRefreshLock(task) {
    if (navigator.locks && navigator.locks.request) return navigator.locks.request("chat.refresh", task);
    return task();
  }

  // One refresh at a time, in this tab and across tabs; resolves true when a newer pair is in use.
  function refreshTokens() {
    if (!auth) return Promise.resolve(false);
    if (refreshing) return refreshing;
    const stale = auth.refresh; // the token this tab wants replaced
    const started = epoch;
    refreshing = withRefreshLock(async () => {
      if (!auth || started !== epoch) return false;
      adoptStoredTokens();
      if (auth.refresh !== stale) return true; // another tab refreshed meanwhile
      try {
        const result = await request("/token/refresh", {
          method: "POST",
          body: { refresh_token: auth.refresh },
          bearer: false,
        });
        if (!auth || started !== epoch) return false;
        if (result.ok) {
          storeTokens(result.data);
          return true;
        }
        if (result.status === 401) {
          if (await newerTokensArrive(stale)) return true;
          // Refused and nothing newer stored: the session is over; the token cannot be revoked twice.
          if (auth && started === epoch) signOut("Your session has ended. Please log in again.", { revoke: false });
        }
        return false;
      } catch (e) {
        return false; // network trouble: the socket's backoff will try again
      }
    }).finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  // Another tab signed in, refreshed or signed out.
  function onStorage(event) {
    if (event.storageArea !== localStorage || (event.key !== null && event.key !== SESSION_KEY)) return;
    const stored = session.load();
    if (!stored) {
      if (auth) signOut("You are logged out.", { revoke: false, clearStorage: false });
      return;
    }
    if (sameUser(stored, auth)) {
      adoptStoredTokens();
      return;
    }
    if (auth) endSession(); // another user signed in there: this tab follows
    auth = stored;
    scheduleRefresh();
    showSignedIn();
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

  // Tear this tab's session down: the room left (its pending messages still delivered), nothing of
  // the user left on screen.
  function endSession() {
    leaveRoom();
    epoch += 1;
    auth = null;
    clearTimeout(refreshTimer);
    clearTimeout(roomsTimer);
    clearTimeout(roomsSoonTimer);
    unsent.clear();
    drafts.clear();
    restoreRoom = false;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    resetView();
    $("rooms").replaceChildren();
    archivedRooms.clear();
    $("room-form").reset();
    $("room-error").textContent = "";
    $("new-room-name").removeAttribute("aria-invalid");
    $("new-room-title").removeAttribute("aria-invalid");
    $("create-room").disabled = false; // a creation still on the wire belongs to the session that ended
    $("new-room").open = false;
  }

  // `revoke`: tell the server to revoke the refresh token (not when it was refused or another tab
  // already did); `clearStorage`: false when the storage was cleared by another tab.
  function signOut(notice, { revoke = true, clearStorage = true } = {}) {
    const old = auth;
    if (clearStorage) {
      const stored = session.load();
      if (!stored || !old || sameUser(stored, old)) session.clear(); // never another user's session
    }
    endSession();
    if (old && revoke) {
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
    // Focus in the form (or already lost: its buttons are disabled while it is sent) would be lost.
    const fromTheForm = $("auth").contains(document.activeElement) || document.activeElement === document.body;
    resetView();
    $("auth").hidden = true;
    $("app").hidden = false;
    $("whoami").hidden = false;
    const name = auth.user ? auth.user.username : "";
    $("whoami-name").textContent = name;
    $("whoami-name").title = name;
    if (fromTheForm) $("rooms-title").focus();
    restoreRoom = true;
    loadRooms();
  }

  // The room pane with no room open.
  function resetView() {
    $("room-title").textContent = "Pick a room";
    $("room-body").hidden = true;
    $("messages").replaceChildren();
    $("online").replaceChildren();
    $("typing").textContent = "";
    $("announce").textContent = "";
    $("send-error").textContent = "";
    $("message-input").value = "";
    $("message-input").removeAttribute("aria-invalid");
    showArchived(false);
    for (const button of document.querySelectorAll(".room-link")) button.removeAttribute("aria-current");
    setStatus(auth ? "no room open" : "signed out");
  }

  function setStatus(text) {
    $("status").textContent = text;
    $("status").dataset.state = text.replace(/[^a-z]/g, "");
  }

  // --- rooms list ----------------------------------------------------------------------

  let roomsTimer = null;
  let restoreRoom = false; // open the room named in the address once the list is in
  const titles = new Map(); // room name -> title, from the list
  const archivedRooms = new Set(); // names of rooms the list (or a refused send) says are archived

  let roomsSoonTimer = null;
  function refreshRoomsSoon() {
    if (!auth) return;
    clearTimeout(roomsTimer);
    clearTimeout(roomsSoonTimer);
    roomsTimer = setTimeout(loadRooms, 1000);
    roomsSoonTimer = setTimeout(loadRooms, 3000); // a server slow to count the socket out
  }

  async function loadRooms() {
    clearTimeout(roomsTimer);
    const started = epoch;
    try {
      const result = await request("/rooms", { bearer: false });
      if (started !== epoch) return;
      if (result.ok) {
        renderRooms(result.data.rooms);
        const name = restoreRoom && !current ? roomFromHash() : null;
        restoreRoom = false;
        if (name && titles.has(name)) openRoom(name, titles.get(name));
      }
    } catch (e) {
      /* offline: try again later */
    }
    if (auth && started === epoch) roomsTimer = setTimeout(loadRooms, ROOMS_POLL_MS);
  }

  function renderRooms(rooms) {
    const list = $("rooms");
    // The list is built anew at each poll: the room button that had the focus gets it back.
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.room : null;
    list.replaceChildren();
    titles.clear();
    archivedRooms.clear();
    for (const room of rooms) {
      titles.set(room.name, room.title);
      if (room.archived) archivedRooms.add(room.name);
      const item = el("li", "room-item");
      const button = el("button", "room-link", room.name);
      button.type = "button";
      button.dataset.room = room.name;
      button.title = room.name; // cut short on screen when long
      if (current && current.name === room.name) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openRoom(room.name, room.title));
      const online = current && current.name === room.name && current.socket ? current.online.size : room.online;
      const count = el("span", "room-online", `${online} online`);
      count.dataset.room = room.name;
      count.setAttribute("aria-hidden", "true");
      item.append(button, count);
      if (room.archived) {
        const badge = el("span", "room-archived", "archived");
        badge.id = `archived-${list.children.length}`;
        button.setAttribute("aria-describedby", badge.id); // read with the name when tabbing through the list
        item.append(badge);
      }
      if (room.title) item.title = room.title;
      list.append(item);
      if (room.name === focused) button.focus();
    }
    if (focused !== null && !list.contains(document.activeElement)) $("rooms-title").focus(); // its room is gone
    if (current) showArchived(archivedRooms.has(current.name)); // archived or unarchived since it was opened
  }

  // An archived room reads as before; its box keeps the draft (it can be copied) but takes no typing.
  function showArchived(archived) {
    $("archived-note").hidden = !archived;
    $("message-input").readOnly = archived;
    $("send").disabled = archived;
    if (archived) $("message-input").setAttribute("aria-describedby", "archived-note send-error");
    else $("message-input").setAttribute("aria-describedby", "send-error");
  }

  // A room made here is opened at once; the form stays filled in when it is refused.
  async function createRoom() {
    const name = $("new-room-name").value.trim();
    const title = $("new-room-title").value.trim();
    $("room-error").textContent = "";
    $("new-room-name").removeAttribute("aria-invalid");
    $("new-room-title").removeAttribute("aria-invalid");
    if (!name) {
      $("room-error").textContent = "Enter a name for the room.";
      $("new-room-name").setAttribute("aria-invalid", "true");
      $("new-room-name").focus();
      return;
    }
    const started = epoch;
    $("create-room").disabled = true;
    try {
      const result = await api("/rooms", { method: "POST", body: title ? { name, title } : { name } });
      if (started !== epoch) return;
      if (result.status === 201) {
        $("new-room-name").value = "";
        $("new-room-title").value = "";
        $("new-room").open = false;
        titles.set(result.data.name, result.data.title);
        openRoom(result.data.name, result.data.title);
        loadRooms(); // the list with the new room in it
      } else {
        $("room-error").textContent = describeErrors(result.data, result.status);
        const fields = result.data && typeof result.data === "object" ? result.data : {};
        if ("name" in fields) $("new-room-name").setAttribute("aria-invalid", "true");
        if ("title" in fields) $("new-room-title").setAttribute("aria-invalid", "true");
      }
    } catch (e) {
      if (started === epoch) $("room-error").textContent = "The server cannot be reached. Try again.";
    } finally {
      $("create-room").disabled = false;
    }
  }

  // --- a room: history, live socket, sending --------------------------------------------

  let current = null; // state of the open room
  // Messages the server refused, or that could not be delivered after their room was left, per room
  // name: client_id -> {content, detail}. Shown in their room, marked "not sent", until retried or
  // discarded.
  const unsent = new Map();

  function newRoomState(name) {
    return {
      name,
      bySeq: new Map(), // seq -> <li>, so nothing shows twice
      lastSeq: null, // highest seq seen; since= on reconnect
      historyLoaded: false, // the newest page is shown; until then each (re)connect asks for it first
      gaps: [], // {after, before}: seq ranges the socket skipped, paged in over REST
      filling: false,
      gapTimer: null,
      connecting: false, // a connect() is fetching its ticket or opening its socket
      connectedBefore: false, // an open socket is a reconnect: deletions made meanwhile are looked for
      oldestSeq: null,
      socket: null,
      socketExpiresAt: 0, // when the socket's token expires (ms)
      renewing: false, // a socket with refreshed tokens is being opened to take over
      renewal: null, // that socket, until it takes over
      ownJoinShown: false,
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
    const room = current;
    room.closed = true;
    clearTimeout(room.reconnectTimer);
    clearTimeout(room.gapTimer);
    for (const timer of room.typing.values()) clearTimeout(timer);
    if (room.socket) room.socket.close(1000);
    if (room.renewal) room.renewal.close(1000);
    current = null;
    if (room.pending.size && auth) deliverPending(room.name, [...room.pending], auth.access);
  }

  // Messages still unacknowledged when their room is left go over REST with their client_id, which
  // stores each once whatever the socket managed to send. What cannot be delivered is kept as unsent.
  async function deliverPending(roomName, entries, token) {
    const started = epoch;
    for (const [clientId, { content }] of entries) {
      let detail;
      try {
        const result = await request(`/messages/${encodeURIComponent(roomName)}`, {
          method: "POST",
          body: { content, client_id: clientId },
          token,
        });
        if (result.ok) continue;
        detail = describeErrors(result.data, result.status);
      } catch (e) {
        detail = "The server cannot be reached.";
      }
      if (started !== epoch) return;
      keepUnsent(roomName, clientId, content, detail);
      if (!current || current.name !== roomName) {
        $("send-error").textContent = `A message to #${roomName} was not sent: ${detail} It waits there, marked "not sent".`;
      }
    }
  }

  function keepUnsent(roomName, clientId, content, detail) {
    if (!unsent.has(roomName)) unsent.set(roomName, new Map());
    unsent.get(roomName).set(clientId, { content, detail });
    if (current && current.name === roomName) showUnsent(current, clientId);
  }

  function forgetUnsent(roomName, clientId) {
    const kept = unsent.get(roomName);
    if (!kept) return;
    kept.delete(clientId);
    if (!kept.size) unsent.delete(roomName);
  }

  // An unsent message stays in the list with its text, why it was not sent, Retry and Discard.
  function showUnsent(room, clientId) {
    const { content, detail } = unsent.get(room.name).get(clientId);
    const list = $("messages");
    const existing = room.pending.has(clientId) ? room.pending.get(clientId).node : null;
    room.pending.delete(clientId);
    const node = pendingNode(content);
    node.classList.replace("pending", "failed");
    const failure = el("div", "failure");
    failure.append(el("span", "failure-text", `Not sent: ${detail}`));
    const retry = el("button", "retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      if (room !== current) return;
      forgetUnsent(room.name, clientId);
      const again = pendingNode(content);
      node.replaceWith(again);
      room.pending.set(clientId, { content, node: again });
      sendFrame(room, { type: "message", content, client_id: clientId }); // or on reconnect
      $("message-input").focus();
    });
    const discard = el("button", "discard", "Discard");
    discard.type = "button";
    discard.addEventListener("click", () => {
      forgetUnsent(room.name, clientId);
      node.remove();
      $("message-input").focus();
    });
    failure.append(retry, discard);
    node.append(failure);
    const stickToBottom = isAtBottom(list);
    if (existing) existing.replaceWith(node);
    else list.append(node);
    if (stickToBottom) list.scrollTop = list.scrollHeight; // its Retry and Discard in view
  }

  // A title in any script, isolated so that a right-to-left one does not reorder the "(#name)".
  function setRoomTitle(name, title) {
    const heading = $("room-title");
    heading.replaceChildren();
    if (title) {
      const text = el("bdi", "", title);
      heading.append(text, ` (#${name})`);
    } else {
      heading.textContent = `#${name}`;
    }
  }

  // The open room is in the address (#name): a reload, a link or Back and Forward open it.
  const ROOM_IN_HASH = /^[A-Za-z0-9_-]{1,50}$/;
  function roomFromHash() {
    let name;
    try {
      name = decodeURIComponent(location.hash.slice(1));
    } catch (e) {
      return null;
    }
    return ROOM_IN_HASH.test(name) ? name : null;
  }

  // Drafts per user and room, kept for this tab (sessionStorage) so that neither a room switch nor a
  // reload loses one; cleared at sign-out.
  const DRAFT_PREFIX = "chat.draft.";
  const draftKey = (name) => `${DRAFT_PREFIX}${auth && auth.user ? auth.user.id : ""}.${name}`;
  const drafts = {
    get(name) {
      try {
        return sessionStorage.getItem(draftKey(name)) || "";
      } catch (e) {
        return "";
      }
    },
    set(name, text) {
      try {
        if (text) sessionStorage.setItem(draftKey(name), text);
        else sessionStorage.removeItem(draftKey(name));
      } catch (e) {
        /* storage full or off: the draft lives in the box only */
      }
    },
    clear() {
      try {
        for (const key of Object.keys(sessionStorage)) if (key.startsWith(DRAFT_PREFIX)) sessionStorage.removeItem(key);
      } catch (e) {
        /* nothing kept */
      }
    },
  };

  async function openRoom(name, title) {
    leaveRoom();
    refreshRoomsSoon(); // the room left counts one fewer online
    current = newRoomState(name);
    if (roomFromHash() !== name) location.hash = encodeURIComponent(name);
    $("message-input").value = drafts.get(name);
    $("message-input").removeAttribute("aria-invalid");
    const room = current;
    setRoomTitle(name, title);
    $("room-body").hidden = false;
    $("load-older").hidden = true;
    $("messages").replaceChildren();
    $("online").replaceChildren();
    $("typing").textContent = "";
    $("announce").textContent = "";
    $("send-error").textContent = "";
    showArchived(archivedRooms.has(name));
    for (const button of document.querySelectorAll(".room-link")) {
      if (button.dataset.room === name) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    for (const clientId of (unsent.get(name) || new Map()).keys()) showUnsent(room, clientId);
    connect(room);
    $("message-input").focus();
  }

  // The room's newest page, before its first connection; throws when it should be asked again.
  async function loadHistory(room) {
    const result = await api(`/messages/${encodeURIComponent(room.name)}?limit=${HISTORY_PAGE}`);
    if (room !== current) return;
    if (result.status === 429 || result.status >= 500) throw new Error(`history ${result.status}`);
    room.historyLoaded = true;
    if (result.ok) {
      for (const message of result.data.slice().reverse()) addMessage(message);
      $("load-older").hidden = result.data.length < HISTORY_PAGE;
      // The box had the focus while the room was empty; on a phone the history has pushed it down.
      if (document.activeElement === $("message-input")) $("message-input").scrollIntoView({ block: "nearest" });
      if (room.lastSeq === null) room.lastSeq = 0;
    } else {
      $("send-error").textContent = describeErrors(result.data, result.status);
    }
  }

  // A resumed socket replays what was missed, not what was deleted meanwhile: after a reconnect the
  // newest page is read again, and a message shown in its span that it no longer holds goes.
  async function dropDeletedWhileAway(room) {
    const upto = room.lastSeq;
    if (upto === null) return;
    let result;
    try {
      result = await api(`/messages/${encodeURIComponent(room.name)}?limit=${HISTORY_PAGE}&before=${upto + 1}`);
    } catch (e) {
      return; // the next reconnect looks again
    }
    if (room !== current || !result.ok) return;
    const kept = new Set(result.data.map((message) => message.seq));
    const from = result.data.length < HISTORY_PAGE ? 0 : Math.min(...kept);
    for (const [seq, node] of room.bySeq) {
      if (seq >= from && seq <= upto && !kept.has(seq)) node.remove(); // the seq stays known, as on message_deleted
    }
  }

  // The older page appears above what is shown, which stays where it is on screen.
  async function loadOlder() {
    const room = current;
    if (!room || room.oldestSeq === null) return;
    const before = room.oldestSeq;
    let result;
    try {
      result = await api(`/messages/${encodeURIComponent(room.name)}?limit=${HISTORY_PAGE}&before=${before}`);
    } catch (e) {
      $("send-error").textContent = "The server cannot be reached. Try again.";
      return;
    }
    if (room !== current || !result.ok) return;
    const list = $("messages");
    const anchor = room.bySeq.get(before);
    const topBefore = anchor ? anchor.getBoundingClientRect().top : 0;
    for (const message of result.data) addMessage(message);
    if (result.data.length < HISTORY_PAGE) {
      if (document.activeElement === $("load-older")) list.focus(); // not lost with the button
      $("load-older").hidden = true;
    }
    if (anchor && anchor.isConnected) list.scrollTop += anchor.getBoundingClientRect().top - topBefore;
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
    setStatus(navigator.onLine === false ? NO_NETWORK : room.attempt ? "reconnecting…" : "connecting…");
    let ticket;
    let expiresAt; // when the socket's token expires: the server closes it then (4001)
    try {
      if (!room.historyLoaded) await loadHistory(room);
      if (room.closed || room !== current || !auth) return;
      ({ ticket, expiresAt } = await socketTicket());
    } catch (e) {
      // No network or the server is down: try again with the same backoff as a dropped socket.
      if (auth) scheduleReconnect(room);
      return;
    }
    if (room.closed || room !== current || !auth) return;
    let socket;
    try {
      socket = new WebSocket(socketUrl(room, ticket));
    } catch (e) {
      scheduleReconnect(room);
      return;
    }
    room.socket = socket;
    room.socketExpiresAt = expiresAt;
    socket.addEventListener("open", () => {
      if (room !== current || room.socket !== socket) return;
      room.attempt = 0;
      setStatus(navigator.onLine === false ? NO_NETWORK : "connected");
      resendPending(room);
      if (room.connectedBefore) dropDeletedWhileAway(room);
      room.connectedBefore = true;
    });
    listen(room, socket);
  }

  // A single-use ticket for a socket, and when that socket's token expires (the server closes it
  // then, 4001): read before asking, as a refresh meanwhile only makes it later. Throws when the
  // server gives none.
  async function socketTicket() {
    const expiresAt = auth.expiresAt;
    const result = await api("/ws-ticket", { method: "POST" });
    if (!result.ok) throw new Error(`ticket ${result.status}`);
    return { ticket: result.data.ticket, expiresAt };
  }

  function socketUrl(room, ticket) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const since = room.lastSeq === null ? "" : `&since=${room.lastSeq}`;
    return `${scheme}://${location.host}/ws/${encodeURIComponent(room.name)}?ticket=${encodeURIComponent(ticket)}${since}`;
  }

  // A socket's events reach the page while it is the room's socket, and not after.
  function listen(room, socket) {
    socket.addEventListener("message", (event) => onFrame(room, socket, event.data));
    socket.addEventListener("close", (event) => onClose(room, socket, event.code));
  }

  function onFrame(room, socket, text) {
    if (room !== current || room.socket !== socket) return;
    let data;
    try {
      data = JSON.parse(text);
    } catch (e) {
      return;
    }
    handleEvent(room, data);
  }

  // The server closes a socket (4001) when the token it was opened with expires. Once the tokens are
  // refreshed, a socket opened with the new ones takes the room over (since= the last seq, so nothing
  // is missed; what both sockets bring shows once, by seq) and then the old one is closed. The user
  // never has no socket in the room: the others see no "left" and "joined", and this page never
  // shows "reconnecting…". Should the renewal fail, the old socket's expiry close reconnects as before.
  async function renewSocket(room) {
    const old = room.socket;
    if (!auth || room.closed || room !== current || room.renewing) return;
    if (!old || old.readyState !== WebSocket.OPEN || room.socketExpiresAt >= auth.expiresAt) return;
    room.renewing = true;
    let socket = null;
    let giveUp = null;
    try {
      // Tabs learn of a refresh together (storage events): not all of them open a socket at once.
      const life = auth.expiresAt - Date.now();
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(2000, life * 0.05)));
      if (!auth || room.closed || room !== current || room.socket !== old) return;
      const { ticket, expiresAt } = await socketTicket();
      if (!auth || room.closed || room !== current || room.socket !== old) return;
      socket = new WebSocket(socketUrl(room, ticket));
      room.renewal = socket; // leaving the room closes it too
      // Its first frame, the room's presence, comes once the server counts it in the room: only
      // then may the old one close without the server announcing that the user left. A renewal
      // that has not got there in 10 s is given up.
      const first = await new Promise((resolve) => {
        socket.addEventListener("message", (event) => resolve(event.data), { once: true });
        socket.addEventListener("close", () => resolve(null));
        giveUp = setTimeout(() => resolve(null), RENEWAL_TIMEOUT_MS);
      });
      if (first === null || room.closed || room !== current || room.socket !== old) return;
      if (old.readyState !== WebSocket.OPEN) return;
      room.socket = socket;
      room.socketExpiresAt = expiresAt;
      socket = null; // the room's now
      listen(room, room.socket); // before its next frame: that is a task after this one
      onFrame(room, room.socket, first);
      // Answers meant for the old socket (a refusal, a repeat's acknowledgement) would be lost with
      // it: what is still pending goes again on the new one, with its client_id (stored once).
      resendPending(room);
      old.close(1000);
    } catch (e) {
      // No network: the old socket stays until it closes, and then reconnects.
    } finally {
      clearTimeout(giveUp);
      if (socket) socket.close(1000); // not taken over
      room.renewal = null;
      room.renewing = false;
    }
  }

  async function onClose(room, socket, code) {
    if (room.socket !== socket) return;
    room.socket = null;
    if (room.closed || room !== current) return;
    if (code === 4003) {
      signOut("Your account has been deactivated.", { revoke: false });
      return;
    }
    if (code === 4004) {
      setStatus("room not found");
      $("send-error").textContent = "This room no longer exists.";
      return;
    }
    setStatus(navigator.onLine === false ? NO_NETWORK : "reconnecting…");
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
        if (!room.bySeq.has(data.seq) && !isMe(data.user)) {
          announce(`${data.user.username}: ${data.content}`);
        }
        receiveMessage(room, data);
        clearTyping(room, data.user.username);
        break;
      case "join": {
        // Said once: one's own arrival when the room is opened (not at each reconnect), and others'
        // only when they were not already online here.
        const me = isMe(data.user);
        const news = me ? !room.ownJoinShown : !room.online.has(data.user.id);
        if (me) room.ownJoinShown = true;
        room.online.set(data.user.id, data.user.username);
        renderOnline(room);
        if (!news) break;
        addNotice(`${data.user.username} joined`);
        if (!me) announce(`${data.user.username} joined`);
        break;
      }
      case "leave": {
        const news = room.online.has(data.user.id);
        room.online.delete(data.user.id);
        renderOnline(room);
        if (!news) break;
        addNotice(`${data.user.username} left`);
        if (!isMe(data.user)) announce(`${data.user.username} left`);
        break;
      }
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
      item.title = name; // long names are cut short on screen
      if (auth && auth.user && name === auth.user.username) item.classList.add("own");
      list.append(item);
    }
    for (const count of document.querySelectorAll(".room-online")) {
      if (count.dataset.room === room.name) count.textContent = `${room.online.size} online`;
    }
  }

  // A moment in the reader's own time zone and words, with the date unless it is today.
  function formatDateTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const time = formatTime(iso);
    if (date.toDateString() === new Date().toDateString()) return time;
    return `${date.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })} ${time}`;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageNode(message) {
    const own = isMe(message.user);
    const item = el("li", own ? "message own" : "message");
    item.dataset.seq = String(message.seq);
    const meta = el("div", "meta");
    meta.append(el("span", "author", own ? `${message.user.username} (you)` : message.user.username));
    const time = el("time", "time", formatTime(message.timestamp));
    time.dateTime = message.timestamp;
    meta.append(time);
    const content = el("p", "content", message.content);
    content.dir = "auto"; // right-to-left text reads right to left
    item.append(meta, content);
    return item;
  }

  // A message of this user's not (yet) stored: no seq, always below the stored ones.
  function pendingNode(content) {
    const node = messageNode({
      seq: -1,
      user: auth.user || { id: null, username: "you" },
      content,
      timestamp: new Date().toISOString(),
    });
    node.classList.add("own", "pending");
    node.removeAttribute("data-seq");
    return node;
  }

  const isAtBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  // The messages not stored (pending, not sent) are the list's last items: looked for from the end,
  // not through the whole list at every message.
  function firstUnstored(list) {
    let first = null;
    let node = list.lastElementChild;
    while (node && (node.classList.contains("pending") || node.classList.contains("failed"))) {
      first = node;
      node = node.previousElementSibling;
    }
    return first;
  }

  // A room open for long under a steady stream keeps its newest items on the page, not every one
  // since it was opened (each new message cost more layout than the last, until the page froze);
  // what is dropped from the top comes back with "Load older". Only while the reader is at the
  // bottom: someone reading back keeps what they read.
  function trimOldest(room, list) {
    if (list.childElementCount <= MAX_SHOWN) return;
    while (list.childElementCount > SHOWN_AFTER_TRIM && !list.firstElementChild.matches(".pending, .failed")) {
      list.firstElementChild.remove();
    }
    const first = list.querySelector(".message[data-seq]");
    if (!first) return;
    room.oldestSeq = Number(first.dataset.seq);
    for (const seq of room.bySeq.keys()) if (seq < room.oldestSeq) room.bySeq.delete(seq);
    $("load-older").hidden = false;
    list.scrollTop = list.scrollHeight;
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
    const stickToBottom = isAtBottom(list);
    let next = null;
    if (room.lastSeq !== null && message.seq < room.lastSeq) {
      // An older one (a page of history, a gap filled): before the first shown with a higher seq.
      for (const [seq, other] of room.bySeq) {
        if (seq > message.seq && other.isConnected && (next === null || seq < Number(next.dataset.seq))) next = other;
      }
    }
    list.insertBefore(node, next || firstUnstored(list));
    room.bySeq.set(message.seq, node);
    room.lastSeq = room.lastSeq === null ? message.seq : Math.max(room.lastSeq, message.seq);
    room.oldestSeq = room.oldestSeq === null ? message.seq : Math.min(room.oldestSeq, message.seq);
    // Only a message placed last follows the bottom: older pages appear above without moving the view.
    const own = isMe(message.user);
    if (next === null && (stickToBottom || own)) list.scrollTop = list.scrollHeight;
    if (next === null && stickToBottom) trimOldest(room, list);
  }

  function isMe(user) {
    return Boolean(auth && auth.user && user.id === auth.user.id);
  }

  // For screen readers: one line at a time in the polite live region (the conversation is not one).
  function announce(text) {
    $("announce").textContent = text;
  }

  function addNotice(text) {
    const list = $("messages");
    const stickToBottom = isAtBottom(list);
    const node = el("li", "notice", text);
    node.title = text;
    list.insertBefore(node, firstUnstored(list));
    if (stickToBottom) list.scrollTop = list.scrollHeight;
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
    const text =
      names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
    if ($("typing").textContent !== text) $("typing").textContent = text; // the same text is not announced again
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

  // The server counts characters (code points), not UTF-16 units as maxlength would.
  function maxLength() {
    return Number($("message-input").dataset.maxLength) || 4000;
  }

  // Says so while the draft is longer than the server takes; true when it fits.
  function checkLength() {
    const input = $("message-input");
    const length = [...input.value].length;
    const tooLong = length > maxLength();
    if (tooLong) {
      input.setAttribute("aria-invalid", "true");
      $("send-error").textContent = `The message is ${length} characters long; at most ${maxLength()} can be sent.`;
    } else if (input.getAttribute("aria-invalid")) {
      input.removeAttribute("aria-invalid");
      $("send-error").textContent = "";
    }
    return !tooLong;
  }

  // A send is shown at once as pending; it is kept and sent again with the same client_id
  // after a reconnect, so it is stored exactly once.
  function sendMessage() {
    const room = current;
    const input = $("message-input");
    const content = input.value;
    if (!room || !content.trim() || input.readOnly) return;
    if (!checkLength()) return; // the draft stays for the user to shorten
    $("send-error").textContent = "";
    const clientId = newClientId();
    const node = pendingNode(content);
    $("messages").append(node);
    $("messages").scrollTop = $("messages").scrollHeight;
    room.pending.set(clientId, { content, node });
    sendFrame(room, { type: "message", content, client_id: clientId });
    input.value = "";
    drafts.set(room.name, "");
    room.lastTypingSent = 0; // the others cleared the notice on this message; the next keystroke says so again
  }

  function resendPending(room) {
    for (const [clientId, { content }] of room.pending) {
      sendFrame(room, { type: "message", content, client_id: clientId });
    }
  }

  // A refused message stays in the list, marked "not sent", with Retry (same client_id) and Discard;
  // the draft in the box is never touched.
  function onSendError(room, data) {
    let detail = data.detail || "The message was not sent.";
    if (data.code === "muted" && data.until && formatDateTime(data.until)) {
      detail = `You are muted in this room until ${formatDateTime(data.until)}.`;
    }
    if (data.code === "archived") {
      archivedRooms.add(room.name); // archived since the list was read: say so before the next poll
      if (room === current) showArchived(true);
    }
    if (data.client_id && room.pending.has(data.client_id)) {
      const { content } = room.pending.get(data.client_id);
      const wait = data.code === "rate_limited" && data.retry_after ? ` (retry in ${data.retry_after} s)` : "";
      keepUnsent(room.name, data.client_id, content, detail + wait);
      return;
    }
    $("send-error").textContent = detail;
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
    $("room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      createRoom();
    });
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
    $("message-input").addEventListener("input", () => {
      if (current) drafts.set(current.name, $("message-input").value);
      checkLength();
      onTypingInput();
    });
    window.addEventListener("storage", onStorage);
    window.addEventListener("offline", () => {
      // The socket may stay open through a short outage (the browser holds its frames): say why
      // nothing moves, and that sends wait (they show as pending and go when the network is back).
      if (current) setStatus(NO_NETWORK);
    });
    window.addEventListener("online", () => {
      if (!current) return;
      if (current.socket) {
        if (current.socket.readyState === WebSocket.OPEN) setStatus("connected");
        return;
      }
      clearTimeout(current.reconnectTimer); // connect now instead of at the end of the backoff
      current.attempt = 0;
      connect(current);
    });
    window.addEventListener("hashchange", () => {
      const name = roomFromHash();
      if (!auth || !name || (current && current.name === name)) return;
      if (titles.has(name)) openRoom(name, titles.get(name));
      else if (!titles.size) restoreRoom = true; // the list is not in yet: opened once it is
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
