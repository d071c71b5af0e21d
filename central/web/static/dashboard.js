// The vcc operations dashboard: live snapshot over server-sent events, SVG charts drawn here,
// Chinese and English. No library, no file from the internet.
"use strict";

const I18N = {
  zh: {
    title: "全省呼叫中心运营", nav_province: "全省总览", nav_report: "时段报表", nav_help: "说明",
    lang_button: "English", conn_live: "实时", conn_lost: "与中心的连接已断开", conn_connecting: "连接中",
    province: "全省", city: "城市", status: "状态", up: "正常", stale: "数据滞后", down: "不可达",
    age: "数据时间", ago: "秒前", no_data: "无数据",
    waiting: "排队数", longest_wait: "最长等待(秒)", agents_ready: "空闲坐席", agents_busy: "忙碌坐席",
    agents_logged_in: "在线坐席", occupancy: "坐席占用率", trunk_occupancy: "中继占用率",
    tie_occupancy: "联络线占用率", sites_up: "在线城市",
    sl_interval: "服务水平(本时段)", sl_today: "服务水平(今日)", asa_today: "平均应答(秒,今日)",
    abandon_today: "放弃率(今日)", offered_today: "呼入(今日)", answered_today: "接通(今日)",
    overflow_in: "溢入", overflow_out: "溢出", sqi: "服务质量指数", sl_target: "目标", sqi_today: "服务质量指数(今日)",
    skill_group: "技能组", expected_wait: "预计等待(秒)", skill_groups: "技能组",
    src_live: "来源：城市实时流", src_records: "来源：中心话单", alerts_none: "",
    alert_site_down: "{name} 不可达（最后数据为 {value} 秒前）", alert_site_down_never: "{name} 不可达（从未收到数据）",
    alert_open_at_down_site: "{name}：{value} 个通话仍未结束，该城市自 {since} 起不可达（待其恢复或 vcc records close-lost-site）",
    alert_site_stale: "{name} 数据滞后 {value} 秒",
    alert_sl_below_target: "{name} 本时段服务水平 {value} 低于目标",
    chart_waiting: "排队数（近几小时）", chart_agents: "空闲 / 忙碌坐席（近几小时）",
    chart_intervals: "每15分钟呼入 / 接通 与服务水平",
    offered: "呼入", answered: "接通", abandoned: "放弃", short_abandoned: "短放弃", blocked: "阻塞",
    failed: "失败", in_progress: "进行中", answered_in_sl: "达标接通", service_level: "服务水平",
    abandon_rate: "放弃率", asa_s: "平均应答(秒)", aht_s: "平均处理(秒)", transfers: "转接",
    level: "维度", key: "对象", start_local: "时段开始", length_s: "时长(秒)",
    date: "日期", length: "粒度", days: "天数", interval_15: "15分钟", interval_day: "按日",
    show: "查询", export_csv: "导出 CSV",
    level_province: "全省", level_entry_site: "呼入城市", level_served_site: "服务城市",
    level_skill_group: "技能组", level_agent: "坐席",
    today: "今日", interval: "本时段", live_figures: "实时数据", records_figures: "话单统计",
    unknown_site: "未知城市", unknown_skill: "该技能组无数据",
    help_title: "指标说明",
    help_body:
      "<p>实时数据来自各城市的实时流，每项都注明数据时间；超过时限未更新的城市显示为“数据滞后”，" +
      "再久则显示为“不可达”，不再显示旧数字。话单统计来自中心的话单，按来电时间归入15分钟时段，" +
      "迟到的话单会修正其所属时段，重复的话单只计一次。</p>" +
      "<p><b>服务水平</b> = {sl} 秒内接通数 / (呼入 − 短放弃 − 阻塞 − 进行中)，目标 {target}。" +
      "<b>短放弃</b>：等待不足 {short} 秒即挂机，单独计数，不计入放弃率。" +
      "<b>放弃率</b> = 放弃 / (呼入 − 短放弃 − 阻塞 − 进行中)。<b>平均应答</b>：接通呼叫从来电到接通的平均时长。" +
      "<b>平均处理</b>：通话（含保持）平均时长。<b>溢出/溢入</b>：在其他城市接通的呼叫。" +
      "<b>坐席占用率</b> = 忙碌 / (忙碌 + 空闲)。</p>" +
      "<p><b>服务质量指数</b> = 100 × (0.50 × min(1, 服务水平/目标) + 0.25 × max(0, 1 − 放弃率/{ceiling}) " +
      "+ 0.15 × min(1, {asa}秒/平均应答) + 0.10 × (1 − 阻塞/呼入))。</p>",
  },
  en: {
    title: "Provincial call center operations", nav_province: "Province", nav_report: "Interval report",
    nav_help: "Help", lang_button: "中文", conn_live: "live", conn_lost: "connection to central lost",
    conn_connecting: "connecting",
    province: "Province", city: "City", status: "Status", up: "up", stale: "stale", down: "unreachable",
    age: "data age", ago: "s ago", no_data: "no data",
    waiting: "Waiting", longest_wait: "Longest wait (s)", agents_ready: "Agents ready", agents_busy: "Agents busy",
    agents_logged_in: "Agents logged in", occupancy: "Occupancy", trunk_occupancy: "Trunk occupancy",
    tie_occupancy: "Tie occupancy", sites_up: "Cities up",
    sl_interval: "SL (interval)", sl_today: "SL (today)", asa_today: "ASA s (today)",
    abandon_today: "Abandon rate (today)", offered_today: "Offered (today)", answered_today: "Answered (today)",
    overflow_in: "Overflow in", overflow_out: "Overflow out", sqi: "Quality index", sl_target: "target", sqi_today: "Quality index (today)",
    skill_group: "Skill group", expected_wait: "Expected wait (s)", skill_groups: "Skill groups",
    src_live: "source: city live stream", src_records: "source: call records at central", alerts_none: "",
    alert_site_down: "{name} unreachable (last data {value} s ago)", alert_site_down_never: "{name} unreachable (never heard from)",
    alert_open_at_down_site: "{name}: {value} calls open at a city that is down since {since} (until it comes back, or vcc records close-lost-site)",
    alert_site_stale: "{name} data is stale ({value} s old)",
    alert_sl_below_target: "{name} service level {value} in this interval is below target",
    chart_waiting: "Calls waiting (last hours)", chart_agents: "Agents ready / busy (last hours)",
    chart_intervals: "Offered / answered per 15 minutes, and service level",
    offered: "Offered", answered: "Answered", abandoned: "Abandoned", short_abandoned: "Short abandons",
    blocked: "Blocked", failed: "Failed", in_progress: "In progress", answered_in_sl: "Answered in SL",
    service_level: "SL", abandon_rate: "Abandon rate", asa_s: "ASA (s)", aht_s: "AHT (s)",
    transfers: "Transfers", level: "Level", key: "Key", start_local: "Start", length_s: "Length (s)",
    date: "Date", length: "Interval", days: "Days", interval_15: "15 minutes", interval_day: "Day",
    show: "Show", export_csv: "Export CSV",
    level_province: "Province", level_entry_site: "Entry city", level_served_site: "Serving city",
    level_skill_group: "Skill group", level_agent: "Agent",
    today: "Today", interval: "This interval", live_figures: "Live", records_figures: "From call records",
    unknown_site: "Unknown city", unknown_skill: "No data for this skill group",
    help_title: "What the figures mean",
    help_body:
      "<p>Live figures come from each city's live stream and show their age; a city whose stream " +
      "stopped shows as stale, then unreachable, never with its last numbers frozen. Record figures " +
      "come from the call records at central, by 15-minute interval of arrival; a late record corrects " +
      "its interval and a record sent twice counts once.</p>" +
      "<p><b>Service level</b> = answered within {sl} s / (offered − short abandons − blocked − in progress); target {target}. " +
      "<b>Short abandons</b>: callers who hung up within {short} s; counted apart, not in the abandon rate. " +
      "<b>Abandon rate</b> = abandoned / (offered − short abandons − blocked − in progress). <b>ASA</b>: mean arrival-to-answer " +
      "time of answered calls. <b>AHT</b>: mean talk time (hold included). <b>Overflow</b>: calls answered in " +
      "another city than the one they entered. <b>Occupancy</b> = busy / (busy + ready) agents.</p>" +
      "<p><b>Service quality index</b> = 100 × (0.50 × min(1, SL / target) + 0.25 × max(0, 1 − abandon rate / {ceiling}) " +
      "+ 0.15 × min(1, {asa} s / ASA) + 0.10 × (1 − blocked / offered)).</p>",
  },
};

const body = document.body;
const view = body.dataset.view;
const siteId = body.dataset.site;
const skillId = body.dataset.skill;
let lang = body.dataset.lang === "en" ? "en" : "zh";
let last = null;          // the last snapshot
let lastAt = 0;           // when it arrived (client clock)
let history = null;

function t(key) { return (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key; }
function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }
function fmt(v, digits = 0) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%"; }
function ageText(s) { return s === null || s === undefined ? t("no_data") : fmt(s, 1) + " " + t("ago"); }

function applyStatic() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  const p = (last && last.policy) || { sl_threshold_s: 20, sl_target: 0.8, short_abandon_s: 5, asa_target_s: 20, abandon_ceiling: 0.2 };
  const helpText = t("help_body").replace("{sl}", p.sl_threshold_s).replace("{target}", pct(p.sl_target))
    .replace("{short}", p.short_abandon_s).replace("{ceiling}", pct(p.abandon_ceiling)).replace("{asa}", p.asa_target_s);
  document.querySelectorAll("[data-i18n-html]").forEach((el) => { el.innerHTML = helpText; });
  document.getElementById("lang-toggle").textContent = t("lang_button");
}

document.getElementById("lang-toggle").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  // Remembered by the server's cookie (Secure, HttpOnly, SameSite=Strict like the session's).
  fetch("/api/lang", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ lang }) })
    .catch(() => {});  // not remembered: this page still switches
  applyStatic();
  render();
  if (view === "report") { document.getElementById("view").innerHTML = ""; loadReport(); }
});

// --- live stream -------------------------------------------------------------------------------

function setConn(state) {
  const el = document.getElementById("conn");
  el.dataset.state = state;
  el.textContent = t("conn_" + state);
}

// The stream sends the whole snapshot first, then only its changes (central/web/live_delta.py,
// whose apply() this mirrors), each numbered: a change whose base is not the snapshot held (one
// was missed) makes the page open the stream again, which starts with the whole snapshot.
const stream = { seq: null, source: null, lives: 0, deltas: 0, resyncs: 0 };
window.vccLive = { stream, model: () => last, apply: (value, change) => applyChange(value, change) };

function newValue(change, where) {
  if (change === null || typeof change !== "object" || !("=" in change)) throw new Error("no value for " + where);
  return change["="];
}

function applyChange(value, change) {
  if (change === null || change === undefined) return value;
  if (typeof change !== "object" || Array.isArray(change)) throw new Error("not a change");
  if ("=" in change) return change["="];
  if ("~" in change || "-" in change || "keys" in change) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not an object");
    const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
    const out = { ...value };
    for (const k of change["-"] || []) {
      if (!has(out, k)) throw new Error("no key " + k);
      delete out[k];
    }
    for (const [k, sub] of Object.entries(change["~"] || {})) {
      // Defined, not assigned: a key named "__proto__" stays a key, as JSON.parse makes it.
      const v = has(out, k) ? applyChange(out[k], sub) : newValue(sub, k);
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    if (!change.keys) return out;
    // The keys in the new order (a city's skill groups are listed in it).
    if (change.keys.length !== Object.keys(out).length || !change.keys.every((k) => has(out, k))) throw new Error("bad keys");
    return Object.fromEntries(change.keys.map((k) => [k, out[k]]));
  }
  if ("[" in change) {
    const body = change["["];
    if (!Array.isArray(value) || !value.every((x) => x !== null && typeof x === "object" && typeof x[body.key] === "string")) {
      throw new Error("not a list of items with ids");
    }
    const items = new Map(value.map((x) => [x[body.key], x]));
    for (const [id, sub] of Object.entries(body.at || {})) {
      items.set(id, items.has(id) ? applyChange(items.get(id), sub) : newValue(sub, id));
    }
    return (body.order || value.map((x) => x[body.key])).map((id) => {
      if (!items.has(id)) throw new Error("no item " + id);
      return items.get(id);
    });
  }
  throw new Error("not a change");
}

function received(snapshot, seq) {
  last = snapshot;
  stream.seq = seq;
  lastAt = Date.now();
  setConn("live");
  render();
}

function resync() {
  stream.resyncs += 1;
  stream.source.close();
  connect();
}

function connect() {
  const source = new EventSource("/api/stream");
  stream.source = source;
  stream.seq = null;
  source.addEventListener("live", (e) => {
    stream.lives += 1;
    received(JSON.parse(e.data), Number(e.lastEventId));
  });
  source.addEventListener("delta", (e) => {
    const d = JSON.parse(e.data);
    if (last === null || stream.seq === null || d.base !== stream.seq) { resync(); return; }
    let next;
    try { next = applyChange(last, d.change); } catch (err) { resync(); return; }
    stream.deltas += 1;
    received(next, d.seq);
  });
  // The session ended (logged out, expired): back to the login, then here again.
  source.addEventListener("ended", () => {
    source.close();
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  });
  source.onerror = () => setConn("lost");
}

// Central itself unreachable: the page says so rather than showing old figures as current.
setInterval(() => { if (last && Date.now() - lastAt > 3000) { setConn("lost"); render(); } }, 1000);

// --- rendering ---------------------------------------------------------------------------------

function card(label, value, src, bad = false, field = "") {
  return `<div class="card${bad ? " bad" : ""}"${field ? ` data-field="${field}"` : ""}><div class="label">${esc(label)}</div>` +
    `<div class="value">${value}</div><div class="src">${esc(src)}</div></div>`;
}

function badge(status, age) {
  return `<span class="badge ${status}" data-status="${status}">${esc(t(status))}</span> <span class="src">${esc(ageText(age))}</span>`;
}

function centralLost() { return !last || Date.now() - lastAt > 3000; }

function renderAlerts() {
  const el = document.getElementById("alerts");
  if (!last) { el.innerHTML = ""; return; }
  el.innerHTML = last.alerts.map((a) => {
    const name = a.name || t("province");
    let key = "alert_" + a.kind;
    if (a.kind === "site_down" && (a.value === null || a.value === undefined)) key = "alert_site_down_never";
    const value = a.kind === "sl_below_target" ? pct(a.value) : fmt(a.value, a.kind === "open_at_down_site" ? 0 : 1);
    const since = a.since === null || a.since === undefined ? "—" : clock(a.since);
    const text = t(key).replace("{name}", name).replace("{value}", value).replace("{since}", since);
    return `<div class="alert${a.kind === "site_stale" ? " warn" : ""}" data-alert="${esc(a.kind)}" data-site="${esc(a.site_id)}">${esc(text)}</div>`;
  }).join("");
}

function recordsSrc() { return t("src_records") + " · " + ageText(last.records_age_s); }

function headline(live, rec, liveSrc, prefix) {
  const p = last.policy;
  const slBad = (v) => v !== null && v !== undefined && v < p.sl_target;
  const L = live || {};
  return `<div class="cards">` +
    card(t("sqi_today"), fmt(rec.today.quality_index, 1), recordsSrc(), false, prefix + "sqi") +
    card(t("sl_interval"), pct(rec.interval.service_level), recordsSrc(), slBad(rec.interval.service_level), prefix + "sl-interval") +
    card(t("sl_today"), pct(rec.today.service_level), recordsSrc(), slBad(rec.today.service_level), prefix + "sl-today") +
    card(t("asa_today"), fmt(rec.today.asa_s, 1), recordsSrc()) +
    card(t("abandon_today"), pct(rec.today.abandon_rate), recordsSrc()) +
    card(t("offered_today"), fmt(rec.today.offered), recordsSrc(), false, prefix + "offered") +
    card(t("answered_today"), fmt(rec.today.answered), recordsSrc(), false, prefix + "answered") +
    card(t("overflow_in") + " / " + t("overflow_out"), fmt(rec.today.overflow_in) + " / " + fmt(rec.today.overflow_out), recordsSrc()) +
    card(t("waiting"), fmt(L.calls_waiting), liveSrc, false, prefix + "waiting") +
    card(t("longest_wait"), fmt(L.longest_wait_s, 1), liveSrc) +
    card(t("agents_ready") + " / " + t("agents_busy"), live ? fmt(L.agents_ready ?? (L.agents_by_state || {}).READY ?? 0) + " / " + fmt(L.agents_busy ?? 0) : "—", liveSrc) +
    card(t("occupancy"), pct(L.occupancy), liveSrc) +
    card(t("trunk_occupancy"), pct(L.trunk_occupancy), liveSrc) +
    card(t("tie_occupancy"), pct(L.tie_occupancy), liveSrc) +
    `</div>`;
}

function renderProvince(el) {
  const prov = last.province;
  const liveSrc = t("src_live") + " · " + fmt(prov.live.sites_up) + "/" + fmt(prov.live.sites_total) + " " + t("sites_up");
  const live = { ...prov.live, agents_ready: (prov.live.agents_by_state || {}).READY || 0,
    agents_busy: ["RINGING", "TALKING", "HELD", "WRAP_UP"].reduce((n, s) => n + ((prov.live.agents_by_state || {})[s] || 0), 0) };
  let html = headline(live, prov.records, liveSrc, "province-");
  html += `<h2>${esc(t("city"))}</h2><table id="cities"><thead><tr>` +
    [t("city"), t("status"), t("waiting"), t("longest_wait"), t("agents_ready"), t("agents_busy"), t("occupancy"),
      t("trunk_occupancy"), t("tie_occupancy"), t("sl_interval"), t("sl_today"), t("asa_today"), t("abandon_today"),
      t("offered_today"), t("overflow_in"), t("overflow_out"), t("sqi_today")].map((h) => `<th>${esc(h)}</th>`).join("") +
    `</tr></thead><tbody>`;
  for (const s of last.sites) html += siteRow(s);
  html += `</tbody></table><p class="src">${esc(t("src_live"))}; ${esc(recordsSrc())}</p>`;
  html += chartsHtml();
  el.innerHTML = html;
  drawCharts();
}

function siteRow(s) {
  const L = s.status === "down" ? null : s.live;
  const r = s.records;
  const p = last.policy;
  const live = (v) => `<td class="live">${v}</td>`;
  const slCell = (v) => `<td class="${v !== null && v < p.sl_target ? "bad" : ""}">${pct(v)}</td>`;
  return `<tr class="${s.status}" data-site-row="${esc(s.site_id)}">` +
    `<td><a href="/site/${encodeURIComponent(s.site_id)}">${esc(s.name || s.site_id)}</a></td>` +
    `<td>${badge(s.status, s.age_s)}</td>` +
    `<td class="live" data-field="waiting">${L ? fmt(L.calls_waiting) : "—"}</td>` +
    live(L ? fmt(L.longest_wait_s, 1) : "—") + live(L ? fmt(L.agents_ready) : "—") + live(L ? fmt(L.agents_busy) : "—") +
    live(L ? pct(L.occupancy) : "—") + live(L ? pct(L.trunk_occupancy) : "—") + live(L ? pct(L.tie_occupancy) : "—") +
    slCell(r.interval.service_level) + slCell(r.today.service_level) + `<td>${fmt(r.today.asa_s, 1)}</td>` +
    `<td>${pct(r.today.abandon_rate)}</td><td data-field="offered">${fmt(r.today.offered)}</td>` +
    `<td>${fmt(r.today.overflow_in)}</td><td>${fmt(r.today.overflow_out)}</td><td>${fmt(r.today.quality_index, 1)}</td></tr>`;
}

function findSite() { return last.sites.find((s) => s.site_id === siteId); }

function renderSite(el) {
  const s = findSite();
  if (!s) { el.innerHTML = `<p>${esc(t("unknown_site"))}: ${esc(siteId)}</p>`; return; }
  const L = s.status === "down" ? null : s.live;
  const liveSrc = t("src_live") + " · " + ageText(s.age_s);
  let html = `<div class="crumbs"><a href="/">${esc(t("province"))}</a> › ${esc(s.name)}</div>` +
    `<h2 id="site-title">${esc(s.name)} ${badge(s.status, s.age_s)}</h2>` + headline(L, s.records, liveSrc, "site-");
  html += `<h2>${esc(t("skill_groups"))}</h2><table><thead><tr>` +
    [t("skill_group"), t("waiting"), t("longest_wait"), t("agents_ready"), t("agents_logged_in"), t("expected_wait"),
      t("sl_interval"), t("sl_today"), t("asa_today"), t("abandon_today"), t("offered_today")].map((h) => `<th>${esc(h)}</th>`).join("") +
    `</tr></thead><tbody>`;
  const groups = new Map();
  for (const g of (L ? L.skill_groups : [])) groups.set(g.skill_group, g);
  for (const k of Object.keys(s.skill_records)) if (!groups.has(k)) groups.set(k, null);
  for (const [gid, g] of groups) {
    const r = s.skill_records[gid];
    html += `<tr class="${s.status}"><td><a href="/site/${encodeURIComponent(s.site_id)}/skill/${encodeURIComponent(gid)}">${esc(gid)}</a></td>` +
      `<td class="live">${g ? fmt(g.calls_waiting) : "—"}</td><td class="live">${g ? fmt(g.longest_wait_s, 1) : "—"}</td>` +
      `<td class="live">${g ? fmt(g.agents_ready) : "—"}</td><td class="live">${g ? fmt(g.agents_logged_in) : "—"}</td>` +
      `<td class="live">${g ? fmt(g.expected_wait_s, 1) : "—"}</td>` +
      `<td>${r ? pct(r.interval.service_level) : "—"}</td><td>${r ? pct(r.today.service_level) : "—"}</td>` +
      `<td>${r ? fmt(r.today.asa_s, 1) : "—"}</td><td>${r ? pct(r.today.abandon_rate) : "—"}</td><td>${r ? fmt(r.today.offered) : "—"}</td></tr>`;
  }
  html += `</tbody></table><p class="src">${esc(liveSrc)}; ${esc(recordsSrc())}</p>` + chartsHtml();
  el.innerHTML = html;
  drawCharts();
}

function renderSkill(el) {
  const s = findSite();
  if (!s) { el.innerHTML = `<p>${esc(t("unknown_site"))}: ${esc(siteId)}</p>`; return; }
  const L = s.status === "down" || !s.live ? null : s.live.skill_groups.find((g) => g.skill_group === skillId);
  const r = s.skill_records[skillId];
  const liveSrc = t("src_live") + " · " + ageText(s.age_s);
  let html = `<div class="crumbs"><a href="/">${esc(t("province"))}</a> › <a href="/site/${encodeURIComponent(s.site_id)}">${esc(s.name)}</a> › ${esc(skillId)}</div>` +
    `<h2>${esc(s.name)} · ${esc(skillId)} ${badge(s.status, s.age_s)}</h2><div class="cards">` +
    card(t("waiting"), L ? fmt(L.calls_waiting) : "—", liveSrc, false, "skill-waiting") +
    card(t("longest_wait"), L ? fmt(L.longest_wait_s, 1) : "—", liveSrc) +
    card(t("agents_ready"), L ? fmt(L.agents_ready) : "—", liveSrc) +
    card(t("agents_logged_in"), L ? fmt(L.agents_logged_in) : "—", liveSrc) +
    card(t("expected_wait"), L ? fmt(L.expected_wait_s, 1) : "—", liveSrc) + `</div>`;
  if (r) {
    html += `<h2>${esc(t("records_figures"))}</h2>` + figuresTable([[t("interval"), r.interval], [t("today"), r.today]]);
  } else {
    html += `<p>${esc(t("unknown_skill"))}</p>`;
  }
  el.innerHTML = html;
}

const FIG_COLUMNS = ["offered", "answered", "abandoned", "short_abandoned", "blocked", "service_level", "abandon_rate",
  "asa_s", "aht_s", "transfers", "overflow_in", "overflow_out"];

function figCell(k, v) {
  if (k === "service_level" || k === "abandon_rate") return pct(v);
  if (k === "asa_s" || k === "aht_s") return fmt(v, 1);
  return fmt(v);
}

function figuresTable(rows) {
  return `<table><thead><tr><th></th>${FIG_COLUMNS.map((k) => `<th>${esc(t(k))}</th>`).join("")}</tr></thead><tbody>` +
    rows.map(([label, f]) => `<tr><td>${esc(label)}</td>${FIG_COLUMNS.map((k) => `<td>${figCell(k, f[k])}</td>`).join("")}</tr>`).join("") +
    `</tbody></table><p class="src">${esc(recordsSrc())}</p>`;
}

function render() {
  applyStatic();
  renderAlerts();
  const el = document.getElementById("view");
  if (view === "report") return;
  if (!last) { el.innerHTML = `<p>${esc(t("conn_connecting"))}…</p>`; return; }
  if (view === "province") renderProvince(el);
  else if (view === "site") renderSite(el);
  else if (view === "skill") renderSkill(el);
  if (centralLost()) el.querySelectorAll("td.live, .card .value").forEach((c) => { c.textContent = "—"; });
}

// --- charts (SVG drawn here) -------------------------------------------------------------------

function chartsHtml() {
  return `<h2>${esc(t("chart_waiting"))}</h2><div class="charts">` +
    `<div class="chart"><div class="legend" id="lg-waiting"></div><svg id="ch-waiting" viewBox="0 0 600 180" preserveAspectRatio="none"></svg></div>` +
    `<div class="chart"><div class="legend" id="lg-agents"></div><svg id="ch-agents" viewBox="0 0 600 180" preserveAspectRatio="none"></svg></div>` +
    `<div class="chart"><div class="legend" id="lg-intervals"></div><svg id="ch-intervals" viewBox="0 0 600 180" preserveAspectRatio="none"></svg></div></div>`;
}

const COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#e53e3e"];

function lineChart(svgId, legendId, series, t0, t1, title) {
  const svg = document.getElementById(svgId);
  if (!svg) return;
  const W = 600, H = 180, P = 26;
  let ymax = 1;
  for (const s of series) for (const [, v] of s.points) if (v !== null && v > ymax) ymax = v;
  const x = (tt) => P + (W - 2 * P) * (t1 > t0 ? (tt - t0) / (t1 - t0) : 0);
  const y = (v) => H - P - (H - 2 * P) * (v / ymax);
  let g = `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#ccc"/>` +
    `<text x="2" y="${P}" font-size="10" fill="#777">${fmt(ymax)}</text><text x="2" y="${H - P}" font-size="10" fill="#777">0</text>`;
  series.forEach((s, i) => {
    let d = "", pen = false;
    for (const [tt, v] of s.points) {
      if (v === null) { pen = false; continue; }   // no data (city down): a gap, not a flat line
      d += (pen ? "L" : "M") + x(tt).toFixed(1) + " " + y(v).toFixed(1) + " ";
      pen = true;
    }
    g += `<path d="${d}" fill="none" stroke="${s.color || COLORS[i % COLORS.length]}" stroke-width="1.6"/>`;
  });
  g += `<text x="${P}" y="${H - 8}" font-size="10" fill="#777">${clock(t0)}</text><text x="${W - P - 30}" y="${H - 8}" font-size="10" fill="#777">${clock(t1)}</text>`;
  svg.innerHTML = g;
  document.getElementById(legendId).innerHTML = `<b>${esc(title)}</b> ` +
    series.map((s, i) => `<span><i style="background:${s.color || COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("");
}

function clock(ts) { const d = new Date(ts * 1000); return d.toTimeString().slice(0, 5); }

function intervalChart(rows, t0, t1) {
  const svg = document.getElementById("ch-intervals");
  if (!svg) return;
  const W = 600, H = 180, P = 26;
  // At least two hours wide, so that one 15-minute bar does not fill the chart.
  t0 = Math.min(t0, t1 - 7200);
  t1 = Math.max(t1, ...rows.map((r) => r.start + 900));
  let ymax = 1;
  for (const r of rows) ymax = Math.max(ymax, r.offered);
  const x = (tt) => P + (W - 2 * P) * ((tt - t0) / Math.max(1, t1 - t0));
  const bw = Math.max(1, (x(t0 + 900) - x(t0)) * 0.42);
  const ySl = (v) => H - P - (H - 2 * P) * v;
  let g = `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#ccc"/><text x="2" y="${P}" font-size="10" fill="#777">${fmt(ymax)}</text>` +
    `<line x1="${P}" y1="${ySl(last ? last.policy.sl_target : 0.8).toFixed(1)}" x2="${W - P}" y2="${ySl(last ? last.policy.sl_target : 0.8).toFixed(1)}" stroke="#e53e3e" stroke-dasharray="3 3" stroke-width="0.8"/>`;
  let d = "";
  for (const r of rows) {
    const h1 = (H - 2 * P) * r.offered / ymax, h2 = (H - 2 * P) * r.answered / ymax, bx = x(r.start) + 1;
    g += `<rect x="${bx.toFixed(1)}" y="${(H - P - h1).toFixed(1)}" width="${bw.toFixed(1)}" height="${h1.toFixed(1)}" fill="#90cdf4"/>`;
    g += `<rect x="${(bx + bw).toFixed(1)}" y="${(H - P - h2).toFixed(1)}" width="${bw.toFixed(1)}" height="${h2.toFixed(1)}" fill="#38a169"/>`;
    if (r.service_level !== null) {
      const px = (bx + bw).toFixed(1), py = ySl(r.service_level).toFixed(1);
      d += (d ? "L" : "M") + px + " " + py + " ";
      g += `<circle cx="${px}" cy="${py}" r="2.5" fill="#e53e3e"/>`;
    }
  }
  g += `<path d="${d}" fill="none" stroke="#e53e3e" stroke-width="1.6"/>`;
  g += `<text x="${P}" y="${H - 8}" font-size="10" fill="#777">${clock(t0)}</text><text x="${W - P - 30}" y="${H - 8}" font-size="10" fill="#777">${clock(t1)}</text>`;
  svg.innerHTML = g;
  document.getElementById("lg-intervals").innerHTML = `<b>${esc(t("chart_intervals"))}</b> ` +
    `<span><i style="background:#90cdf4"></i>${esc(t("offered"))}</span><span><i style="background:#38a169"></i>${esc(t("answered"))}</span>` +
    `<span><i style="background:#e53e3e"></i>${esc(t("service_level"))} (0–100%, - - ${esc(t("sl_target"))})</span>`;
}

function drawCharts() {
  if (!history || !last) return;
  const names = Object.fromEntries(last.sites.map((s) => [s.site_id, s.name]));
  const bySite = new Map();
  for (const s of history.samples) {
    if (!bySite.has(s.site_id)) bySite.set(s.site_id, []);
    bySite.get(s.site_id).push(s);
  }
  const t1 = history.now, t0 = history.samples.length ? Math.min(...history.samples.map((s) => s.at)) : t1 - 3600;
  const waiting = [...bySite].map(([id, ss]) => ({ name: names[id] || id, points: ss.map((s) => [s.at, s.calls_waiting]) }));
  lineChart("ch-waiting", "lg-waiting", waiting, t0, t1, t("waiting"));
  const agents = [];
  for (const [id, ss] of bySite) {
    agents.push({ name: (names[id] || id) + " · " + t("agents_ready"), points: ss.map((s) => [s.at, s.agents_ready]) });
    agents.push({ name: (names[id] || id) + " · " + t("agents_busy"), points: ss.map((s) => [s.at, s.agents_busy]) });
  }
  lineChart("ch-agents", "lg-agents", agents, t0, t1, t("agents_ready") + " / " + t("agents_busy"));
  intervalChart(history.intervals, history.intervals.length ? Math.min(t0, history.intervals[0].start) : t0, t1);
}

async function loadHistory() {
  if (view !== "province" && view !== "site") return;
  try {
    const r = await fetch("/api/history" + (view === "site" ? "?site=" + encodeURIComponent(siteId) : ""));
    if (r.ok) { history = await r.json(); drawCharts(); }
  } catch (e) { /* the live stream shows the connection state */ }
}

// --- interval report ---------------------------------------------------------------------------

function reportForm() {
  // The server's local day (the province's time zone), not the browser's; empty = the server's today.
  const today = last ? new Date((last.day_start + last.policy.utc_offset_s) * 1000).toISOString().slice(0, 10) : "";
  const levels = ["province", "entry_site", "served_site", "skill_group", "agent"];
  return `<form class="report" id="report-form">` +
    `<label>${esc(t("date"))} <input type="date" name="date" value="${today}"></label>` +
    `<label>${esc(t("days"))} <input type="number" name="days" value="1" min="1" max="31" style="width:4em"></label>` +
    `<label>${esc(t("length"))} <select name="length"><option value="900">${esc(t("interval_15"))}</option><option value="86400">${esc(t("interval_day"))}</option></select></label>` +
    `<label>${esc(t("level"))} <select name="level">${levels.map((l) => `<option value="${l}">${esc(t("level_" + l))}</option>`).join("")}</select></label>` +
    `<button type="submit">${esc(t("show"))}</button> <a id="csv-link" href="#">${esc(t("export_csv"))}</a></form><div id="report-table"></div>`;
}

let reportQuery = null;

async function loadReport() {
  const el = document.getElementById("view");
  if (!document.getElementById("report-form")) {
    el.innerHTML = reportForm();
    document.getElementById("report-form").addEventListener("submit", (e) => { e.preventDefault(); reportQuery = null; loadReport(); });
  }
  const form = document.getElementById("report-form");
  const q = reportQuery || new URLSearchParams(new FormData(form));
  reportQuery = q;
  document.getElementById("csv-link").href = "/api/intervals.csv?" + q.toString();
  const r = await fetch("/api/intervals?" + q.toString());
  const data = await r.json();
  const cols = ["level", "key", "start_local", ...FIG_COLUMNS];
  const rows = data.rows || [];
  document.getElementById("report-table").innerHTML = `<table id="report"><thead><tr>${cols.map((k) => `<th>${esc(t(k))}</th>`).join("")}</tr></thead><tbody>` +
    rows.map((row) => `<tr>${cols.map((k) => `<td>${k === "level" ? esc(t("level_" + row.level)) : k === "key" || k === "start_local" ? esc(row[k]) : figCell(k, row[k])}</td>`).join("")}</tr>`).join("") +
    `</tbody></table><p class="src">${esc(t("src_records"))}</p>`;
}

applyStatic();
setConn("connecting");
connect();
if (view === "report") { loadReport(); setInterval(loadReport, 15000); }
loadHistory();
setInterval(loadHistory, 10000);
render();
