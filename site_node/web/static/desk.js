// The agent desktop (/desk) and the group leader's console (/console). Written here, no library:
// a static skeleton per page, filled from the server-sent view (event "view") on every push.
// Every control has a label or an accessible name from its action, in either language.
"use strict";

const T = {
  en: {
    title_desk: "Agent desktop", title_console: "Group leader's console", nav_desk: "Desktop", nav_console: "Console",
    login_title: "Log in", agent_code: "Agent code", password: "Password", log_in: "Log in", log_out: "Log out",
    state: "State", time_in_state: "Time in state", reason: "Reason", ready: "Ready", not_ready: "Not ready",
    wrap_up_code: "Wrap-up code", note: "Note", offer: "Incoming call", caller: "Caller", service: "Service",
    skill_group: "Skill group", waited: "Waited", ivr: "IVR choice", purpose: "Why", from_agent: "From agent",
    voicemail: "Voicemail", vm_left: "Left at", vm_length: "Length", vm_state: "State", vm_agent: "Assigned to",
    take: "Take", play: "Play", done: "Done", vm_none: "No voicemail for your groups", vm_player: "Voicemail player",
    vm_new: "new", vm_assigned: "assigned", vm_note: "Note on the message",
    callback_preview: "Callback to make", callback_number: "Number", callback_why: "Asked", accept: "Accept", decline: "Decline",
    "flow-offer": "in the IVR", "max-wait": "after waiting too long", abandoned: "hung up waiting", "virtual-hold": "kept their place",
    answer: "Answer", call: "Call", call_state: "Call state", customer: "Customer record", name: "Name",
    level: "Level", city: "City", notes: "Notes", phone: "Phone", no_customer: "No customer record for this number",
    history: "History of the call", attached: "Attached data", hold: "Hold", retrieve: "Retrieve", hang_up: "Hang up",
    keypad: "Keypad", send_digits: "Send digits", target: "Target", transfer_note: "Note for the colleague",
    transfer: "Transfer", consult: "Consult", complete: "Complete", conference: "Conference", cancel: "Cancel",
    consulting: "Consulting", messages: "Messages", to: "To", message: "Message", send: "Send",
    calls_today: "My calls today", queues: "Queues of my skill groups", waiting: "Waiting", oldest: "Oldest wait",
    ready_n: "Ready", logged_in: "Logged in", talking: "Talking", answered_at: "Answered", ended: "Ended",
    none: "none", team: "My team", agent: "Agent", current_call: "Current call", actions: "Actions",
    force_reason: "Reason for not ready", force_ready: "Force ready", force_not_ready: "Force not ready",
    force_logout: "Force logout", monitor: "Monitor", whisper: "Whisper", barge: "Barge in", intercept: "Intercept",
    stop_supervising: "Stop listening", supervising: "You are supervising", broadcast_text: "Message to the team",
    broadcast: "Broadcast", supervised_by: "Supervised", logout_pending: "logout after the call",
    forced_ready: "Your group leader {by} set you ready", forced_not_ready: "Your group leader {by} set you not ready ({reason})",
    forced_logout: "Your group leader {by} logs you out (after the current call)",
    sup_whisper: "Group leader {other} is coaching you (only you hear them)", sup_barge: "Group leader {other} joined the call",
    sup_intercept: "You took over the call from {other}", transfer_stage: "Transfer: {stage} {agent}",
    pending_nr: "Not ready after this call ({reason})", IVR: "back to the IVR", agents: "Agents", groups: "Skill groups",
    error: "Error", lost: "connection lost", live: "live", "consult-connected": "consult", empty: "—",
    STATE_READY: "Ready", STATE_NOT_READY: "Not ready", STATE_RINGING: "Reserved (ringing)", STATE_TALKING: "Talking",
    STATE_HELD: "Held", STATE_WRAP_UP: "Wrap-up", STATE_LOGGED_OUT: "Logged out", STATE_UNKNOWN: "unknown",
    mode_monitor: "monitoring", mode_whisper: "whispering", mode_barge: "barged in",
    admin_agents: "Agents of the site", new_code: "New agent's code", new_name: "Name",
    new_skills: "Skills (group=level, …)", new_password: "Password for the agent", add_agent: "Add agent",
    change_skills: "Change skills", reset_password: "Reset password", disable: "Disable", enable: "Enable",
    role: "Role", skills: "Skills", status: "Status", disabled: "disabled", active: "active",
    edit_customer: "Edit record", save_customer: "Save record", customer_saved: "Saved at central (version {v})",
    knowledge: "Knowledge for this service", no_articles: "No article for this service",
  },
  zh: {
    title_desk: "坐席工作台", title_console: "班长席", nav_desk: "坐席工作台", nav_console: "班长席",
    login_title: "登录", agent_code: "工号", password: "密码", log_in: "登录", log_out: "签出",
    state: "状态", time_in_state: "状态时长", reason: "原因", ready: "就绪", not_ready: "未就绪",
    wrap_up_code: "小结代码", note: "备注", offer: "来电", caller: "主叫号码", service: "业务",
    voicemail: "语音留言", vm_left: "留言时间", vm_length: "时长", vm_state: "状态", vm_agent: "处理坐席",
    take: "领取", play: "播放", done: "完成", vm_none: "你的技能组暂无留言", vm_player: "留言播放",
    vm_new: "未处理", vm_assigned: "已领取", vm_note: "留言处理备注",
    callback_preview: "待回呼", callback_number: "号码", callback_why: "原因", accept: "接受", decline: "拒绝",
    "flow-offer": "语音导航中预约", "max-wait": "等候超时", abandoned: "排队时挂机", "virtual-hold": "保留排队位置",
    skill_group: "技能组", waited: "等待时长", ivr: "语音导航选择", purpose: "来由", from_agent: "来自坐席",
    answer: "接听", call: "通话", call_state: "通话状态", customer: "客户资料", name: "姓名",
    level: "级别", city: "城市", notes: "备注", phone: "电话", no_customer: "该号码没有客户资料",
    history: "通话经历", attached: "随路数据", hold: "保持", retrieve: "恢复", hang_up: "挂断",
    keypad: "拨号盘", send_digits: "发送按键", target: "目标", transfer_note: "给同事的备注",
    transfer: "转接", consult: "咨询", complete: "完成转接", conference: "会议", cancel: "取消",
    consulting: "咨询中", messages: "消息", to: "发给", message: "消息内容", send: "发送",
    calls_today: "今日通话", queues: "我的技能组队列", waiting: "排队", oldest: "最长等待",
    ready_n: "就绪", logged_in: "已登录", talking: "通话中", answered_at: "接听时间", ended: "结束",
    none: "无", team: "我的班组", agent: "坐席", current_call: "当前通话", actions: "操作",
    force_reason: "未就绪原因", force_ready: "强制就绪", force_not_ready: "强制未就绪",
    force_logout: "强制签出", monitor: "监听", whisper: "耳语", barge: "强插", intercept: "拦截",
    stop_supervising: "停止监听", supervising: "正在监控", broadcast_text: "发给全组的消息",
    broadcast: "广播", supervised_by: "被监控", logout_pending: "通话后签出",
    forced_ready: "班长 {by} 将你设为就绪", forced_not_ready: "班长 {by} 将你设为未就绪（{reason}）",
    forced_logout: "班长 {by} 将你签出（当前通话结束后）",
    sup_whisper: "班长 {other} 正在对你耳语（只有你能听到）", sup_barge: "班长 {other} 已加入通话",
    sup_intercept: "你已从 {other} 接管此通话", transfer_stage: "转接：{stage} {agent}",
    pending_nr: "本次通话后未就绪（{reason}）", IVR: "转回语音导航", agents: "坐席", groups: "技能组",
    error: "错误", lost: "连接中断", live: "实时", "consult-connected": "咨询", empty: "—",
    STATE_READY: "就绪", STATE_NOT_READY: "未就绪", STATE_RINGING: "预占（振铃）", STATE_TALKING: "通话",
    STATE_HELD: "保持", STATE_WRAP_UP: "话后处理", STATE_LOGGED_OUT: "已签出", STATE_UNKNOWN: "未知",
    mode_monitor: "监听中", mode_whisper: "耳语中", mode_barge: "已强插",
    admin_agents: "本站坐席管理", new_code: "新坐席工号", new_name: "姓名",
    new_skills: "技能（技能组=等级，…）", new_password: "坐席密码", add_agent: "添加坐席",
    change_skills: "修改技能", reset_password: "重置密码", disable: "停用", enable: "启用",
    role: "角色", skills: "技能", status: "状态", disabled: "已停用", active: "正常",
    edit_customer: "编辑客户资料", save_customer: "保存客户资料", customer_saved: "已保存到省中心（版本 {v}）",
    knowledge: "本业务的知识库", no_articles: "本业务暂无知识文章",
  },
};
// Error ids the page words itself in Chinese; others show the server's English message.
const ERRORS_ZH = {
  "wrong-password": "工号或密码错误", "unknown-agent": "没有这个工号", "already-logged-in": "该工号已在别处登录",
  "bad-agent-code": "工号是四位数字", "bad-password-format": "密码是六位数字", "not-a-supervisor": "你不是班长，不能使用班长席",
  "message-not-yours": "这条留言没有分给你", "no-audio": "本站没有这条留言的录音", "message-not-played": "请先播放留言",
  "not-your-group": "这不是你的技能组", "message-wrong-state": "这条留言已处理", "bad-message-id": "留言编号有误",
  "message-not-found": "没有这条留言", "note-too-long": "备注最多 500 字",
  "not-your-team": "该坐席不在你带领的班组", "not-your-call": "这不是你的通话", "agent-busy": "请先结束通话",
  "agent-not-on-call": "该坐席当前没有通话", "reason-required": "请选择原因", "bad-reason-code": "请选择原因",
  "session-expired": "会话已过期，请重新登录", "bad-session": "请登录", "logged-out": "你已签出，请重新登录",
  "agent-not-ready": "对方未就绪", "no-agent-ready": "该技能组无人就绪", "bad-transfer-target": "请选择转接目标",
  "bad-message": "消息内容为 1 到 500 个字", "bad-digits": "按键只能是 0-9 * #",
  "not-an-administrator": "只有管理员可以管理坐席", "agent-exists": "该工号已存在", "bad-skills": "请填写技能，如 general=5",
  "stale-version": "客户资料已被他人修改，请重新打开后再编辑", "not-your-customer": "只能查看你自己来电客户的资料",
  "central-unavailable": "省中心暂时无法连接，请稍后再试", "nothing-to-save": "没有要保存的内容",
  "unknown-skill-group": "本站没有这个技能组", "bad-skill-level": "技能等级为 1 到 10", "cannot-disable-yourself": "不能停用自己",
};

const page = document.body.dataset.page;
let lang = document.body.dataset.lang === "en" ? "en" : "zh";
let data = null;
let skew = 0;
let source = null;
let directory = [];

const $ = (sel) => document.querySelector(sel);
const t = (key, vars) => {
  let s = (T[lang][key] ?? T.en[key] ?? key);
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v ?? "");
  return s;
};
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "i18n") { node.dataset.i18n = v; node.textContent = t(v); }
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const button = (i18n, onclick, cls) => el("button", { type: "button", i18n, onclick, class: cls });
const field = (key) => el("span", { "data-field": key });
const labelled = (id, i18n, control) => [el("label", { for: id, i18n }), control];
function setField(root, key, value) {
  const node = (root || document).querySelector(`[data-field="${key}"]`);
  if (node) node.textContent = value === null || value === undefined || value === "" ? t("empty") : String(value);
}
const show = (node, visible) => { if (node) node.hidden = !visible; };
const now = () => Date.now() / 1000 + skew;
function dur(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:` + String(m).padStart(2, "0") : `${m}`) + ":" + String(r).padStart(2, "0");
}
const clock = (at) => (at ? new Date(at * 1000).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB") : t("empty"));
const stateName = (s) => t(`STATE_${s}`);

// -- talking to the server --------------------------------------------------------------------

function showError(err) {
  const box = $("#error");
  if (!err) { box.textContent = ""; return; }
  const words = lang === "zh" && ERRORS_ZH[err.id] ? ERRORS_ZH[err.id] : err.message;
  box.textContent = `${t("error")}: ${words}`;
  box.dataset.errorId = err.id;
}
function key() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^a-z0-9-]/gi, "");
}
async function call(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method, credentials: "same-origin",
      headers: method === "POST" ? { "Content-Type": "application/json" } : {},
      body: method === "POST" ? JSON.stringify({ idempotency_key: key(), ...(body || {}) }) : undefined,
    });
  } catch (e) {
    showError({ id: "unreachable", message: lang === "zh" ? "无法连接站点" : "the site cannot be reached" });
    return null;
  }
  let json = null;
  try { json = await res.json(); } catch (e) { json = null; }
  if (!res.ok) {
    const err = (json && json.error) || { id: "http-" + res.status, message: `HTTP ${res.status}` };
    showError(err);
    if (res.status === 401) toLogin();
    return null;
  }
  showError(null);
  return json;
}
const post = (path, body) => call("POST", path, body);

// -- login and the live stream ----------------------------------------------------------------

function toLogin() {
  if (source) { source.close(); source = null; }
  data = null;
  show($("#login"), true);
  show($("#app"), false);
  $("#who").textContent = "";
  $("#conn").dataset.state = "idle";
  $("#conn").textContent = "";
}
function connect() {
  if (source) source.close();
  source = new EventSource(`/api/stream?view=${page}`);
  source.addEventListener("view", (e) => {
    $("#conn").dataset.state = "live";
    $("#conn").textContent = t("live");
    render(JSON.parse(e.data));
  });
  source.addEventListener("ended", (e) => { showError(JSON.parse(e.data).error); toLogin(); });
  source.onerror = async () => {
    $("#conn").dataset.state = "lost";
    $("#conn").textContent = t("lost");
    if (source && source.readyState === EventSource.CLOSED) {
      // Refused (expired or logged out) rather than cut: find out why, in words.
      const ok = await call("GET", page === "console" ? "/api/team" : "/api/me");
      if (ok) connect();
    }
  };
}
async function start() {
  const ok = await call("GET", page === "console" ? "/api/team" : "/api/me");
  if (ok) { enter(ok); return; }
  toLogin();
}
function enter(view) {
  show($("#login"), false);
  show($("#app"), true);
  build();
  render(view);
  connect();
  refreshDirectory();
}
$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const res = await post("/api/login", { agent_code: $("#agent-code").value, password: $("#password").value });
  if (!res) return;
  $("#password").value = "";
  const view = await call("GET", page === "console" ? "/api/team" : "/api/me");
  if (view) enter(view);
});

// -- language -----------------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.body.dataset.lang = lang;
  $("#lang-toggle").textContent = lang === "zh" ? "English" : "中文";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  const conn = $("#conn");
  if (conn.dataset.state === "live" || conn.dataset.state === "lost") conn.textContent = t(conn.dataset.state);
  if (data) { const keep = data; build(); render(keep); }
}
$("#lang-toggle").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  // Remembered by the server's cookie (Secure, HttpOnly, SameSite=Strict like the session's).
  fetch("/api/lang", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ lang }) })
    .catch(() => {});  // not remembered: this page still switches
  applyLanguage();
});

// -- the desktop --------------------------------------------------------------------------------

function buildDesk(app) {
  app.append(
    el("div", { class: "grid" },
      el("section", { class: "card wide", id: "state-card", "aria-label": t("state") },
        el("div", { class: "row" },
          el("span", { class: "badge", "data-field": "state", "data-state": "" }),
          el("span", { class: "muted", i18n: "time_in_state" }), field("time"),
          field("reason"), field("pending")),
        el("div", { id: "notices" }),
        el("div", { class: "row", id: "wrap-up", hidden: true },
          ...labelled("wrap-code", "wrap_up_code", el("select", { id: "wrap-code" })),
          ...labelled("wrap-note", "note", el("textarea", { id: "wrap-note", rows: 1, cols: 40, maxlength: 1000 }))),
        el("div", { class: "row" },
          button("ready", () => setState(true), "primary"),
          ...labelled("reason", "reason", el("select", { id: "reason" })),
          button("not_ready", () => setState(false)),
          button("log_out", logout, "danger"))),
      el("section", { class: "card wide offer", id: "offer", hidden: true, "aria-label": t("offer") },
        el("h2", { i18n: "offer" }),
        el("dl", {},
          el("dt", { i18n: "caller" }), el("dd", {}, field("offer-ani")),
          el("dt", { i18n: "service" }), el("dd", {}, field("offer-group")),
          el("dt", { i18n: "waited" }), el("dd", {}, field("offer-waited")),
          el("dt", { i18n: "ivr" }), el("dd", {}, field("offer-ivr")),
          el("dt", { i18n: "purpose" }), el("dd", {}, field("offer-purpose"))),
        el("div", { id: "offer-customer" }),
        button("answer", () => onCall("answer"), "primary")),
      el("section", { class: "card wide offer", id: "callback-preview", hidden: true, "aria-label": t("callback_preview") },
        el("h2", { i18n: "callback_preview" }),
        el("dl", {},
          el("dt", { i18n: "callback_number" }), el("dd", {}, field("cbp-number")),
          el("dt", { i18n: "service" }), el("dd", {}, field("cbp-group")),
          el("dt", { i18n: "callback_why" }), el("dd", {}, field("cbp-reason"))),
        el("div", { class: "row" },
          button("accept", () => answerCallback(true), "primary"),
          button("decline", () => answerCallback(false)))),
      el("section", { class: "card wide", id: "knowledge", hidden: true, "aria-label": t("knowledge") },
        el("h2", { i18n: "knowledge" }), el("ul", { id: "articles" })),
      el("section", { class: "card wide", id: "call", hidden: true, "aria-label": t("call") },
        el("h2", { i18n: "call" }),
        el("div", { class: "grid" },
          el("div", {},
            el("dl", {},
              el("dt", { i18n: "call_state" }), el("dd", {}, field("call-state")),
              el("dt", { i18n: "caller" }), el("dd", {}, field("call-ani")),
              el("dt", { i18n: "service" }), el("dd", {}, field("call-group")),
              el("dt", { i18n: "waited" }), el("dd", {}, field("call-waited")),
              el("dt", { i18n: "ivr" }), el("dd", {}, field("call-ivr")),
              el("dt", { i18n: "from_agent" }), el("dd", {}, field("call-from")),
              el("dt", { i18n: "consulting" }), el("dd", {}, field("call-consult"))),
            el("h2", { i18n: "history" }), el("ol", { id: "call-history", "aria-label": t("history") }),
            el("h2", { i18n: "attached" }), el("dl", { id: "call-attached" })),
          el("div", {},
            el("div", { id: "call-customer", role: "region", "aria-label": t("customer") }),
            button("edit_customer", openCustomer),
            el("form", { id: "customer-edit", hidden: true, onsubmit: saveCustomer },
              ...["name", "level", "city"].flatMap((k) => [el("p", {}, ...labelled(`cust-${k}`, k, el("input", { id: `cust-${k}`, maxlength: 128 })))]),
              el("p", {}, ...labelled("cust-notes", "notes", el("textarea", { id: "cust-notes", rows: 3, cols: 36, maxlength: 2000 }))),
              el("button", { type: "submit", i18n: "save_customer" }),
              el("span", { class: "muted", "data-field": "customer-saved" })))),
        el("div", { class: "row" },
          button("hold", () => onCall("hold")), button("retrieve", () => onCall("retrieve")),
          button("hang_up", () => onCall("hangup"), "danger"),
          ...labelled("keypad", "keypad", el("input", { id: "keypad", size: 8, maxlength: 32, inputmode: "tel" })),
          button("send_digits", sendDigits)),
        el("div", { class: "row", id: "transfer-row" },
          ...labelled("target", "target", el("select", { id: "target" })),
          ...labelled("transfer-note", "transfer_note", el("input", { id: "transfer-note", size: 24, maxlength: 500 })),
          button("transfer", () => transfer("blind")), button("consult", () => transfer("consult"))),
        el("div", { class: "row", id: "consult-row", hidden: true },
          button("complete", () => onCall("complete"), "primary"), button("conference", () => onCall("conference")),
          button("cancel", () => onCall("cancel")))),
      messagesCard(),
      voicemailCard(),
      el("section", { class: "card", "aria-label": t("calls_today") }, el("h2", { i18n: "calls_today" }),
        el("table", {}, el("thead", {}, el("tr", {}, ...["caller", "service", "answered_at", "ended", "wrap_up_code"]
          .map((k) => el("th", { i18n: k })))), el("tbody", { id: "today" }))),
      queuesCard()));
}

// Voicemail of the agent's groups (F27): taken, played here (the site streams the WAV to the
// agent it is assigned to only), marked done; each step in the caller's call record.
let voicemailShown = null;
function voicemailCard() {
  voicemailShown = null;
  return el("section", { class: "card wide", id: "voicemail", "aria-label": t("voicemail") }, el("h2", { i18n: "voicemail" }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["caller", "service", "vm_left", "vm_length", "vm_state", "vm_agent", "empty"]
      .map((k) => el("th", { i18n: k })))), el("tbody", { id: "voicemail-list" })),
    el("div", { class: "row" },
      el("audio", { id: "voicemail-player", controls: true, preload: "auto", "aria-label": t("vm_player") }),
      ...labelled("vm-note", "vm_note", el("input", { id: "vm-note", size: 32, maxlength: 500 }))));
}
function renderVoicemail(list, me) {
  // Rebuilt only when a message changed: a button is not replaced under the agent's pointer.
  const sig = JSON.stringify([list, me]);
  if (sig === voicemailShown) return;
  voicemailShown = sig;
  const mine = (m) => m.state === "assigned" && m.agent_code === me;
  $("#voicemail-list").replaceChildren(...(list.length ? list.map((m) => el("tr", { "data-voicemail": m.message_id },
    el("td", { "data-field": "vm-caller", text: m.caller }), el("td", { text: m.skill_group }),
    el("td", { text: clock(m.started_at) }), el("td", { text: dur(m.duration_s) }),
    el("td", { "data-field": "vm-state", text: t(`vm_${m.state}`) }), el("td", { "data-field": "vm-agent", text: m.agent_code || t("empty") }),
    el("td", {},
      m.state === "new" ? button("take", () => workVoicemail(m.message_id, "take"), "primary") : null,
      mine(m) ? button("play", () => playVoicemail(m.message_id)) : null,
      mine(m) ? button("done", () => workVoicemail(m.message_id, "done")) : null))) : [el("tr", {}, el("td", { colspan: 7, class: "muted", i18n: "vm_none" }))]));
}
async function workVoicemail(id, step) {
  const res = await post(`/api/voicemail/${encodeURIComponent(id)}/${step}`, step === "done" ? { note: $("#vm-note").value } : {});
  if (res && step === "done") $("#vm-note").value = "";
  return res;
}
async function playVoicemail(id) {
  if (!(await workVoicemail(id, "play"))) return;
  const player = $("#voicemail-player");
  player.dataset.message = id;
  player.src = `/api/voicemail/${encodeURIComponent(id)}/audio`;
  player.load();
  player.play().catch(() => {});  // a page with no sound device still loads the message
}

function messagesCard() {
  return el("section", { class: "card", "aria-label": t("messages") }, el("h2", { i18n: "messages" }),
    el("ul", { class: "msgs", id: "messages" }),
    el("div", { class: "row" },
      ...labelled("message-to", "to", el("select", { id: "message-to" })),
      ...labelled("message-text", "message", el("input", { id: "message-text", size: 28, maxlength: 500 })),
      button("send", sendMessage)));
}
function queuesCard() {
  return el("section", { class: "card", "aria-label": t("queues") }, el("h2", { i18n: "queues" }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["skill_group", "waiting", "oldest", "ready_n", "talking", "logged_in"]
      .map((k) => el("th", { i18n: k })))), el("tbody", { id: "queues" })));
}

function fillSelect(select, options, placeholder) {
  // Rebuilt only when the choices change, so what the person picked stays picked.
  const sig = JSON.stringify(options);
  const values = JSON.stringify(options.map((o) => o.value ?? `group:${o.group}`));
  if (select.dataset.sig === sig) return;
  if (select.dataset.values === values) {
    // The same choices with new words (presence changed): relabel in place, the pick stays.
    const flat = options.filter((o) => o.group === undefined);
    const offset = placeholder ? 1 : 0;
    flat.forEach((o, i) => { if (select.options[i + offset]) select.options[i + offset].textContent = o.label; });
    select.dataset.sig = sig;
    return;
  }
  const keep = select.value;
  select.replaceChildren();
  if (placeholder) select.append(el("option", { value: "", text: placeholder }));
  let group = null;
  for (const o of options) {
    if (o.group !== undefined) { group = el("optgroup", { label: o.group }); select.append(group); continue; }
    (group || select).append(el("option", { value: o.value, text: o.label }));
  }
  select.dataset.sig = sig;
  select.dataset.values = values;
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

function customerBlock(c) {
  if (!c) return el("p", { class: "muted", i18n: "no_customer" });
  return el("div", {}, el("h2", { i18n: "customer" }),
    el("dl", { "data-customer": c.id },
      el("dt", { i18n: "name" }), el("dd", { "data-field": "customer-name", text: c.name }),
      el("dt", { i18n: "phone" }), el("dd", { text: c.phone }),
      el("dt", { i18n: "level" }), el("dd", { text: c.level || t("empty") }),
      el("dt", { i18n: "city" }), el("dd", { text: c.city || t("empty") }),
      el("dt", { i18n: "notes" }), el("dd", { text: c.notes || t("empty") })));
}

function notice(text, kind) { return el("p", { class: "notice", "data-notice": kind, text }); }

function renderDesk(v) {
  const a = v.agent;
  const badge = $('[data-field="state"]');
  badge.dataset.state = a.state;
  badge.textContent = stateName(a.state);
  setField(null, "reason", a.state === "NOT_READY" ? reasonLabel(v, a.reason) : "");
  setField(null, "pending", a.pending_not_ready ? t("pending_nr", { reason: reasonLabel(v, a.pending_not_ready) }) : "");
  fillSelect($("#reason"), v.reasons.map((r) => ({ value: r.code, label: r.label })));
  fillSelect($("#wrap-code"), v.wrap_up_codes.map((r) => ({ value: r.code, label: r.label })), t("empty"));
  show($("#wrap-up"), a.state === "WRAP_UP");

  const notes = [];
  if (v.forced && v.now - v.forced.at < 600) {
    notes.push(notice(t(`forced_${v.forced.stage.replace("-", "_")}`, { by: v.forced.by, reason: reasonLabel(v, v.forced.reason) }), "forced"));
  }
  if (v.supervision && v.call && v.supervision.call_id === v.call.call_id) {
    notes.push(notice(t(`sup_${v.supervision.mode}`, { other: v.supervision.other }), "supervision"));
  }
  if (v.transfer && v.call && v.transfer.call_id === v.call.call_id) {
    notes.push(notice(t("transfer_stage", { stage: t(v.transfer.stage), agent: v.transfer.agent_code }), "transfer"));
  }
  $("#notices").replaceChildren(...notes);

  const p = v.callback_preview;
  show($("#callback-preview"), !!p);
  if (p) {
    setField(null, "cbp-number", p.number);
    setField(null, "cbp-group", p.skill_group);
    setField(null, "cbp-reason", t(p.reason));
  }
  const o = v.offer;
  show($("#offer"), !!o);
  if (o) {
    setField(null, "offer-ani", o.ani);
    setField(null, "offer-group", o.skill_group);
    setField(null, "offer-waited", `${Math.round(o.waited_s)} s`);
    setField(null, "offer-ivr", o.attached.ivr_choice || "");
    setField(null, "offer-purpose", o.purpose === "transfer-consult" ? `${t("consult")} ← ${o.from_agent_code}` : o.purpose);
    $("#offer-customer").replaceChildren(customerBlock(o.customer));
  }
  const c = v.call && !o ? v.call : null;
  show($("#call"), !!c);
  if (c) {
    setField(null, "call-state", stateName(c.state));
    setField(null, "call-ani", c.ani);
    setField(null, "call-group", c.skill_group_name);
    setField(null, "call-waited", `${Math.round(c.waited_s)} s`);
    setField(null, "call-ivr", c.ivr_choice ? `${c.ivr_choice} ${c.ivr_label}` : "");
    setField(null, "call-from", c.from_agent_code);
    setField(null, "call-consult", c.consult ? `${c.consult.agent_code} ${c.consult.agent_name} @${c.consult.site_id} (${c.consult.state}${c.consult.conference ? ", " + t("conference") : ""})` : "");
    $("#call-history").replaceChildren(...c.history.map((h) => el("li", { text: h })));
    $("#call-attached").replaceChildren(...Object.entries(c.attached).flatMap(([k, val]) => [el("dt", { text: k }), el("dd", { text: val })]));
    $("#call-customer").replaceChildren(customerBlock(c.customer));
    const mine = c.mine;
    const consulting = !!c.consult;
    for (const [k, vis] of [["hold", mine && c.state === "TALKING" && !consulting], ["retrieve", mine && c.state === "HELD" && !consulting]]) {
      show(document.querySelector(`#call [data-i18n="${k}"]`), vis);
    }
    show($("#transfer-row"), mine && !consulting);
    show($("#consult-row"), mine && consulting);
  }
  fillSelect($("#message-to"), v.colleagues.map((p) => ({ value: p.code, label: `${p.code} ${p.name} @${p.site_id}` })));
  renderMessages(v.messages);
  renderVoicemail(v.voicemail || [], v.agent.code);
  $("#today").replaceChildren(...v.calls_today.map((x) => el("tr", { "data-call": x.call_id },
    el("td", { text: x.ani }), el("td", { text: x.skill_group }), el("td", { text: clock(x.answered_at) }),
    el("td", { text: x.ended_at ? clock(x.ended_at) : t("talking") }), el("td", { text: [x.wrap_up_code, x.note].filter(Boolean).join(" · ") || t("empty") }))));
  renderQueues(v.queues);
  renderTargets();
  if (!c) { show($("#customer-edit"), false); editing = null; }
  show(document.querySelector('#call [data-i18n="edit_customer"]'), !!(c && c.customer));
  showKnowledge(o ? o.skill_group : c ? c.skill_group : null);
}

// The caller's record, edited here and saved at central (an edit on an old version is refused).
let editing = null;
async function openCustomer() {
  const c = data && data.call && data.call.customer;
  if (!c) return;
  const res = await call("GET", `/api/customers/${encodeURIComponent(c.id)}`);
  if (!res) return;
  editing = res.customer;
  for (const k of ["name", "level", "city", "notes"]) $(`#cust-${k}`).value = editing[k] || "";
  setField(null, "customer-saved", "");
  show($("#customer-edit"), true);
}
async function saveCustomer(e) {
  e.preventDefault();
  if (!editing) return;
  const body = { version: Number(editing.version) };
  for (const k of ["name", "level", "city", "notes"]) body[k] = $(`#cust-${k}`).value;
  const res = await post(`/api/customers/${encodeURIComponent(editing.customer_id)}`, body);
  if (!res) return;
  editing = res.customer;
  $("#customer-edit").dataset.version = editing.version;
  setField(null, "customer-saved", t("customer_saved", { v: editing.version }));
}
// The published articles of the call's service, fetched once per service.
let knowledgeFor = null;
async function showKnowledge(service) {
  show($("#knowledge"), !!service);
  if (!service || service === knowledgeFor) return;
  knowledgeFor = service;
  const res = await call("GET", `/api/knowledge?service=${encodeURIComponent(service)}`);
  const list = res ? res.articles : [];
  $("#articles").replaceChildren(...(list.length ? list.map((a) => el("li", { "data-article": a.id },
    el("strong", { text: a.title }), el("p", { text: a.body }))) : [el("li", { class: "muted", i18n: "no_articles" })]));
}

function reasonLabel(v, code) {
  const r = (v.reasons || []).find((x) => x.code === code);
  return r ? r.label : code;
}
function renderMessages(list) {
  $("#messages").replaceChildren(...list.slice().reverse().map((m) => el("li", { "data-message": m.id },
    el("span", { class: "muted", text: `${clock(m.at)} ${m.from} ${m.from_name}${m.broadcast ? " [" + t("broadcast") + "]" : ""} → ${m.to.length > 3 ? m.to.length : m.to.join(",")}: ` }),
    el("span", { text: m.text }))));
}
function renderQueues(list) {
  $("#queues").replaceChildren(...list.map((q) => el("tr", { "data-queue": q.skill_group },
    el("td", { text: q.name }), el("td", { "data-field": "waiting", text: q.waiting }),
    el("td", { text: `${Math.round(q.oldest_wait_s)} s` }), el("td", { text: q.ready }),
    el("td", { text: q.talking }), el("td", { text: q.logged_in }))));
}
function renderTargets() {
  const select = $("#target");
  if (!select) return;
  const me = data && data.agent.code;
  const opts = [];
  opts.push({ group: t("agents") });
  for (const s of directory) for (const a of s.agents) {
    if (a.code === me) continue;
    opts.push({ value: `agent:${a.code}`, label: `${a.code} ${a.name} · ${s.name} · ${stateName(a.state)}` });
  }
  opts.push({ group: t("groups") });
  for (const s of directory) for (const g of s.skill_groups) {
    opts.push({ value: `group:${s.site_id}:${g.id}`, label: `${s.name} · ${g.name} (${t("ready_n")} ${g.ready})` });
  }
  opts.push({ group: t("ivr") }, { value: "ivr", label: t("IVR") });
  fillSelect(select, opts, t("empty"));
}
async function refreshDirectory() {
  if (!data || page !== "desk") return;
  const res = await fetch("/api/directory", { credentials: "same-origin" });
  if (res.ok) { directory = (await res.json()).sites; renderTargets(); }
}
setInterval(refreshDirectory, 3000);

async function setState(ready) {
  const body = { reason: $("#reason").value };
  if (data && data.agent.state === "WRAP_UP") {
    await post("/api/wrap-up", { ...body, next: ready ? "ready" : "not_ready", code: $("#wrap-code").value, note: $("#wrap-note").value });
    $("#wrap-note").value = "";
  } else {
    await post("/api/state", { ...body, state: ready ? "ready" : "not_ready" });
  }
}
async function logout() {
  if (await post("/api/logout", {})) toLogin();
}
function currentCallId() {
  if (!data) return "";
  return (data.offer && data.offer.call_id) || (data.call && data.call.call_id) || "";
}
async function onCall(action, body) {
  const id = currentCallId();
  return post(`/api/calls/${encodeURIComponent(id || "none")}/${action}`, body || {});
}
async function answerCallback(accept) {
  const p = data && data.callback_preview;
  return post(`/api/callbacks/${encodeURIComponent(p ? p.callback_id : "none")}/${accept ? "accept" : "decline"}`, {});
}
async function sendDigits() {
  if (await onCall("digits", { digits: $("#keypad").value })) $("#keypad").value = "";
}
async function transfer(kind) {
  const value = $("#target").value;
  let target = {};
  if (value.startsWith("agent:")) target = { agent_code: value.slice(6) };
  else if (value.startsWith("group:")) { const [, site, group] = value.split(":"); target = { site_id: site, skill_group: group }; }
  else if (value === "ivr") target = { ivr: true };
  if (await onCall("transfer", { kind, target, note: $("#transfer-note").value })) $("#transfer-note").value = "";
}
async function sendMessage() {
  if (await post("/api/messages", { to: $("#message-to").value, text: $("#message-text").value })) $("#message-text").value = "";
}

// -- the console --------------------------------------------------------------------------------

function buildConsole(app) {
  app.append(
    el("div", { class: "grid" },
      el("section", { class: "card wide", "aria-label": t("state") },
        el("div", { class: "row" },
          el("span", { class: "badge", "data-field": "state", "data-state": "" }),
          el("span", { class: "muted", i18n: "time_in_state" }), field("time"),
          button("log_out", logout, "danger")),
        el("div", { class: "row", id: "supervising", hidden: true },
          el("span", { class: "notice", "data-field": "supervising" }),
          button("stop_supervising", () => post("/api/team/leave", {})))),
      el("section", { class: "card wide", "aria-label": t("team") },
        el("h2", { i18n: "team" }),
        el("div", { class: "row" }, ...labelled("force-reason", "force_reason", el("select", { id: "force-reason" }))),
        el("table", {}, el("thead", {}, el("tr", {}, ...["agent", "state", "time_in_state", "reason", "current_call", "supervised_by", "actions"]
          .map((k) => el("th", { i18n: k })))), el("tbody", { id: "team" }))),
      adminCard(),
      queuesCard(),
      el("section", { class: "card", "aria-label": t("broadcast") }, el("h2", { i18n: "messages" }),
        el("ul", { class: "msgs", id: "messages" }),
        el("div", { class: "row" },
          ...labelled("broadcast-text", "broadcast_text", el("textarea", { id: "broadcast-text", rows: 2, cols: 36, maxlength: 500 })),
          button("broadcast", broadcast)))));
}

function renderConsole(v) {
  const a = v.agent;
  const badge = $('[data-field="state"]');
  badge.dataset.state = a.state;
  badge.textContent = stateName(a.state);
  const sup = v.supervising;
  show($("#supervising"), !!sup);
  setField(null, "supervising", sup ? `${t("supervising")}: ${sup.agent} (${t("mode_" + sup.mode)})` : "");
  fillSelect($("#force-reason"), v.reasons.map((r) => ({ value: r.code, label: r.label })));
  $("#team").replaceChildren(...v.team.map((m) => {
    const act = (i18n, fn) => el("button", { type: "button", i18n, onclick: fn });
    const force = (action) => post(`/api/team/${m.code}/force`, { action, reason: $("#force-reason").value });
    const watch = (mode) => post(`/api/team/${m.code}/supervise`, { mode });
    const callText = m.call ? `${m.call.ani} · ${m.call.skill_group}${m.call.answered_at ? " · " + dur(now() - m.call.answered_at) : ""}` : "";
    return el("tr", { "data-agent-row": m.code, "data-state": m.state },
      el("td", { text: `${m.code} ${m.name}` }),
      el("td", {}, el("span", { class: "badge", "data-state": m.state, text: stateName(m.state) })),
      el("td", m.since ? { "data-since": m.since, text: dur(now() - m.since) } : { text: t("empty") }),
      el("td", { text: [m.state === "NOT_READY" ? reasonLabel(v, m.reason) : "", m.pending_not_ready ? "→ " + reasonLabel(v, m.pending_not_ready) : "", m.logout_pending ? t("logout_pending") : ""].filter(Boolean).join(" ") }),
      el("td", { "data-field": "call", text: callText }),
      el("td", { text: m.supervised_by ? `${m.supervised_by.supervisor} ${t("mode_" + m.supervised_by.mode)}` : "" }),
      el("td", { class: "actions" },
        act("force_ready", () => force("ready")), act("force_not_ready", () => force("not_ready")),
        act("force_logout", () => force("logout")), act("monitor", () => watch("monitor")),
        act("whisper", () => watch("whisper")), act("barge", () => watch("barge")), act("intercept", () => watch("intercept"))));
  }));
  renderQueues(v.queues);
  renderMessages(v.messages);
  renderAdmin(v.agents);
}
// The administrator's card (site_node/web/admin.py): hidden for a group leader, refused by the
// server anyway.
function adminCard() {
  const input = (id, i18n, attrs) => labelled(id, i18n, el("input", { id, ...(attrs || {}) }));
  return el("section", { class: "card wide", id: "admin", hidden: true, "aria-label": t("admin_agents") },
    el("h2", { i18n: "admin_agents" }),
    el("div", { class: "row" },
      ...input("admin-code", "new_code", { maxlength: 4, inputmode: "numeric" }),
      ...input("admin-name", "new_name", { maxlength: 64 }),
      ...input("admin-skills", "new_skills", { maxlength: 200 }),
      ...input("admin-password", "new_password", { type: "password", maxlength: 6, autocomplete: "new-password" }),
      button("add_agent", addAgent)),
    el("table", {}, el("thead", {}, el("tr", {}, ...["agent", "role", "state", "skills", "status", "actions"]
      .map((k) => el("th", { i18n: k })))), el("tbody", { id: "admin-agents" })));
}
function skillsOf(text) {
  // "general=5, billing=3" -> {general: 5, billing: 3}; anything else goes as typed (the server says why).
  const out = {};
  for (const part of text.split(/[,，\s]+/).filter(Boolean)) {
    const [g, l] = part.split("=");
    if (!g || l === undefined || !/^\d+$/.test(l)) return text;
    out[g] = Number(l);
  }
  return out;
}
async function addAgent() {
  const ok = await post("/api/admin/agents", {
    agent_code: $("#admin-code").value, name: $("#admin-name").value,
    skills: skillsOf($("#admin-skills").value), password: $("#admin-password").value,
  });
  if (ok) { $("#admin-code").value = ""; $("#admin-name").value = ""; $("#admin-password").value = ""; }
}
function renderAdmin(list) {
  show($("#admin"), !!list);
  if (!list) return;
  $("#admin-agents").replaceChildren(...list.map((a) => {
    const change = (what, body) => post(`/api/admin/agents/${a.code}/${what}`, body || {});
    return el("tr", { "data-admin-row": a.code, "data-disabled": a.disabled ? "yes" : "no" },
      el("td", { text: `${a.code} ${a.name}` }),
      el("td", { text: a.role }),
      el("td", { text: a.state ? stateName(a.state) : t("empty") }),
      el("td", { "data-field": "skills", text: Object.entries(a.skills).map(([g, l]) => `${g}=${l}`).join(", ") }),
      el("td", { "data-field": "status", i18n: a.disabled ? "disabled" : "active" }),
      el("td", { class: "actions" },
        button("change_skills", () => change("skills", { skills: skillsOf($("#admin-skills").value) })),
        button("reset_password", () => change("password", { password: $("#admin-password").value })),
        a.disabled ? button("enable", () => change("enable")) : button("disable", () => change("disable"))));
  }));
}
async function broadcast() {
  if (await post("/api/team/broadcast", { text: $("#broadcast-text").value })) $("#broadcast-text").value = "";
}

// -- both -------------------------------------------------------------------------------------

function build() {
  const app = $("#app");
  app.replaceChildren();
  if (page === "console") buildConsole(app); else buildDesk(app);
}
function render(v) {
  data = v;
  skew = v.now - Date.now() / 1000;
  $("#who").textContent = `${v.agent.code} ${v.agent.name}`;
  if (page === "console") renderConsole(v); else renderDesk(v);
  tick();
}
function tick() {
  if (!data) return;
  const a = data.agent;
  const left = a.state === "WRAP_UP" && a.wrap_up_until ? ` (${dur(a.wrap_up_until - now())})` : "";
  setField(null, "time", a.since ? dur(now() - a.since) + left : "");
  for (const cell of document.querySelectorAll("[data-since]")) cell.textContent = dur(now() - Number(cell.dataset.since));
}
setInterval(tick, 1000);

applyLanguage();
start();
