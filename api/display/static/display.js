/* foursave public lobby display (/display): rooftop PV output and four-saving progress.
 *
 * Polls GET /display/data[?site=<id>] every ?poll_ms (default 5000, min 500) and updates the
 * page in place; it never reloads. ?lang=zh-TW|en fixes the language, otherwise the labels
 * alternate every 20 s (numbers stay). A failed poll (network, non-200, bad JSON) leaves the
 * last good snapshot on screen and shows #connection[data-state=lost]. Data only ever reaches
 * the DOM through textContent and SVG attributes. No libraries.
 */
(function () {
  'use strict';
  const qs = new URLSearchParams(location.search);
  const SITE = qs.get('site');
  const FIXED_LANG = { 'zh-TW': 'zh-TW', zh: 'zh-TW', en: 'en' }[qs.get('lang')] || null;
  const POLL_MS = Math.max(500, parseInt(qs.get('poll_ms'), 10) || 5000);
  const LANG_MS = 20000;
  const DEFAULT_TZ = 'Asia/Taipei';
  const SVG = 'http://www.w3.org/2000/svg';

  const T = {
    'zh-TW': {
      subtitle: '屋頂太陽光電 · 四省節能', updated: '資料更新',
      pv_power_w: '太陽光電即時發電', pv_energy_today_kwh: '今日發電量', pv_energy_year_kwh: '今年累計發電量',
      building_power_w: '大樓即時用電', co2_avoided_today_kg: '今日減碳量', co2_avoided_year_kg: '今年累計減碳量',
      pv_value_month_ntd: '本月太陽光電省下電費', ntd: '元',
      chart_title: '今日發電與用電 (kW)', legend_pv: '太陽光電', legend_load: '大樓用電', no_data: '尚無今日資料',
      progress: (p) => (p ? p + ' 年' : '') + '四省節能進度',
      electricity: '省電', fuel: '省油', water: '省水', paper: '省紙',
      desc_saving: '節省率', desc_paper: '線上簽核率', target: '目標',
      met: '達成', not_met: '未達成', pending: '統計中',
      as_of: (t) => '資料時間 ' + t,
      lost: (t) => (t ? '連線中斷，顯示 ' + t + ' 的資料' : '連線中斷，等待資料'),
      factor: '排碳係數', provisional: '暫用', kg: '公斤', t: '公噸',
      date: { locale: 'zh-TW', opts: { month: 'long', day: 'numeric', weekday: 'short' } },
    },
    en: {
      subtitle: 'Rooftop solar · Four-saving programme', updated: 'Updated',
      pv_power_w: 'Solar power now', pv_energy_today_kwh: 'Solar energy today', pv_energy_year_kwh: 'Solar energy this year',
      building_power_w: 'Building power now', co2_avoided_today_kg: 'CO₂ avoided today', co2_avoided_year_kg: 'CO₂ avoided this year',
      pv_value_month_ntd: 'Saved on the electricity bill this month', ntd: 'NT$',
      chart_title: 'Today (kW)', legend_pv: 'Solar PV', legend_load: 'Building load', no_data: 'No data yet today',
      progress: (p) => 'Four-saving progress' + (p ? ' ' + p : ''),
      electricity: 'Electricity', fuel: 'Fuel', water: 'Water', paper: 'Paper',
      desc_saving: 'saved', desc_paper: 'signed online', target: 'target',
      met: 'Met', not_met: 'Not met', pending: 'In progress',
      as_of: (t) => 'as of ' + t,
      lost: (t) => (t ? 'Connection lost — showing data from ' + t : 'Connection lost — waiting for data'),
      factor: 'grid factor', provisional: 'provisional', kg: 'kg', t: 't',
      date: { locale: 'en-GB', opts: { weekday: 'short', day: 'numeric', month: 'short' } },
    },
  };

  let lang = FIXED_LANG || 'zh-TW';
  let snap = null;      // last good snapshot
  let lost = false;     // last poll failed

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const isNum = (v) => typeof v === 'number' && isFinite(v);
  const L = () => T[lang];

  // ---- formatting -------------------------------------------------------------------------
  function num(v, digits) {
    const s = v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
    return /^-0(\.0+)?$/.test(s) ? s.slice(1) : s;
  }
  const dec = (v) => (Math.abs(v) < 100 ? 1 : 0);
  const kw = (w) => [num(w / 1000, dec(w / 1000)), 'kW'];
  const kwh = (v) => [num(v, dec(v)), 'kWh'];
  const mass = (kg) => (Math.abs(kg) >= 1000 ? [num(kg / 1000, Math.abs(kg) < 1e6 ? 1 : 0), 't'] : [num(kg, dec(kg)), 'kg']);
  const FIELDS = {
    pv_power_w: [kw, 'kW'],
    pv_energy_today_kwh: [kwh, 'kWh'],
    pv_energy_year_kwh: [(v) => (Math.abs(v) >= 10000 ? [num(v / 1000, Math.abs(v) < 1e6 ? 1 : 0), 'MWh'] : [num(v, 0), 'kWh']), 'kWh'],
    co2_avoided_today_kg: [mass, 'kg'],
    co2_avoided_year_kg: [mass, 't'],
    building_power_w: [kw, 'kW'],
    pv_value_month_ntd: [(v) => [num(v, 0), 'ntd'], 'ntd'],
  };
  function pct(rate, trim) {  // 0.0443 -> "4.4%"; trim: 1.0 -> "100%"
    const s = num(rate * 100, 1);
    return (trim ? s.replace(/\.0$/, '') : s) + '%';
  }
  const siteTz = () => (snap && snap.chart && snap.chart.tz) || DEFAULT_TZ;
  function fmtTime(ms, tz, seconds) {
    const o = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    if (seconds) o.second = '2-digit';
    try { return new Intl.DateTimeFormat('en-GB', Object.assign({ timeZone: tz }, o)).format(ms); }
    catch (e) { return new Intl.DateTimeFormat('en-GB', o).format(ms); }  // unknown tz: screen time
  }
  function tzOffsetMs(tz, ms) {  // tz's UTC offset at instant ms
    try {
      const p = {};
      new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric',
        day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' })
        .formatToParts(ms).forEach((x) => { p[x.type] = +x.value; });
      return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
    } catch (e) { return -new Date(ms).getTimezoneOffset() * 60000; }
  }

  // ---- rendering --------------------------------------------------------------------------
  function setText(el, text) { if (el && el.textContent !== text) el.textContent = text; }

  function renderStatic() {
    document.documentElement.lang = lang;
    $$('[data-i18n]').forEach((el) => setText(el, L()[el.dataset.i18n]));
    tick();
  }

  function renderHeader(d) {
    const s = d.site || {};
    const name = lang === 'en' ? s.name_en || s.name : s.name || s.name_en;
    setText($('#site-name'), name ? String(name) : '—');
    setText($('#updated'), isNum(d.generated_at) ? fmtTime(d.generated_at, siteTz(), true) : '—');
  }

  function renderTiles(d) {
    const values = d.values || {};
    const gen = d.generated_at;
    const staleMs = (isNum(d.stale_after_s) ? d.stale_after_s : 900) * 1000;
    Object.keys(FIELDS).forEach((key) => {
      const el = $('[data-field="' + key + '"]');
      if (!el) return;
      const tile = el.closest('.tile');
      const v = values[key] || {};
      const has = isNum(v.value);
      const [text, unit] = has ? FIELDS[key][0](v.value) : ['—', FIELDS[key][1]];
      setText(el, text);
      setText($('.unit', tile), L()[unit] || unit);
      const stale = isNum(v.ts) && isNum(gen) && v.ts < gen - staleMs;
      tile.dataset.stale = String(stale);
      const asOf = $('.as-of', tile);
      setText(asOf, stale ? L().as_of(fmtTime(v.ts, siteTz())) : '');
      asOf.hidden = !stale;
    });
  }

  function renderProgress(d) {
    const by = {};
    (Array.isArray(d.progress) ? d.progress : []).forEach((p) => { if (p && p.item) by[p.item] = p; });
    setText($('#progress-title'), L().progress(d.progress_period ? String(d.progress_period) : ''));
    // one scale for the three savings bars, so they can be compared; paper is a 0–100 % rate
    let scale = 0.05;
    ['electricity', 'fuel', 'water'].forEach((k) => {
      const p = by[k] || {};
      if (isNum(p.savings_rate)) scale = Math.max(scale, p.savings_rate);
      if (isNum(p.target_rate)) scale = Math.max(scale, p.target_rate * 2);
    });
    scale = Math.ceil(scale * 20 - 1e-9) / 20;
    $$('[data-item]').forEach((row) => {
      const p = by[row.dataset.item] || {};
      const paper = row.dataset.item === 'paper';
      const rate = paper ? p.actual : p.savings_rate;
      const max = paper ? 1 : scale;
      const met = p.met === true ? 'true' : p.met === false ? 'false' : 'null';
      row.dataset.met = met;
      const value = $('.prog-value', row);
      setText(value, isNum(rate) ? pct(rate, paper) : '—');
      value.classList.toggle('neg', isNum(rate) && rate < 0);
      setText($('.badge', row), L()[{ true: 'met', false: 'not_met', null: 'pending' }[met]]);
      setText($('.prog-target', row), L().target + ' ' + (isNum(p.target_rate) ? pct(p.target_rate, true) : '—'));
      const clamp = (x) => Math.max(0, Math.min(1, x / max)) * 100 + '%';
      $('.bar-fill', row).style.width = isNum(rate) ? clamp(rate) : '0%';
      const mark = $('.bar-target', row);
      mark.style.display = isNum(p.target_rate) ? 'block' : 'none';
      if (isNum(p.target_rate)) mark.style.left = clamp(p.target_rate);
    });
  }

  function renderFooter(d) {
    const f = d.factor;
    if (!f || !isNum(f.value)) { setText($('#factor'), L().factor + ' —'); return; }
    const year = isNum(f.year) ? f.year : (String(f.basis || '').match(/\b(19|20)\d\d\b/) || [''])[0];
    const extra = [year, f.provisional ? L().provisional : ''].filter(Boolean).join(', ');
    const val = f.value.toLocaleString('en-US', { maximumFractionDigits: 4 });
    setText($('#factor'), L().factor + ' ' + val + ' ' + (f.unit || 'kg CO2e/kWh') + (extra ? ' (' + extra + ')' : ''));
  }

  // ---- chart ------------------------------------------------------------------------------
  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach((k) => e.setAttribute(k, attrs[k]));
    if (text != null) e.textContent = text;
    return e;
  }
  function series(list) {  // [[ts, value|null], ...] -> runs of finite points, split at nulls and holes
    const runs = [];
    let run = [], last = null;
    (Array.isArray(list) ? list : []).forEach((pt) => {
      const ok = Array.isArray(pt) && isNum(pt[0]) && isNum(pt[1]);
      if (!ok || (last !== null && pt[0] - last > 30 * 60000)) { if (run.length) runs.push(run); run = []; }
      if (ok) { run.push(pt); last = pt[0]; } else last = null;
    });
    if (run.length) runs.push(run);
    return runs;
  }
  function niceStep(max) {
    const raw = max / 4, mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  }

  function renderChart(d) {
    const box = $('#chart .plot');
    const W = box.offsetWidth || 880, H = box.offsetHeight || 340;
    const c = d.chart || {};
    const tz = c.tz || DEFAULT_TZ;
    const pv = series(c.pv_w), load = series(c.load_w);
    const m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(c.day || '');
    const guess = m ? Date.UTC(+m[1], m[2] - 1, +m[3]) : Math.floor((isNum(d.generated_at) ? d.generated_at : Date.now()) / 864e5) * 864e5;
    let day0 = guess - tzOffsetMs(tz, guess);
    day0 = guess - tzOffsetMs(tz, day0);  // second pass in case the offset changed that day
    let maxW = 0;
    pv.concat(load).forEach((r) => r.forEach((p) => { maxW = Math.max(maxW, p[1]); }));
    const maxKw = Math.max(maxW / 1000, 10), step = niceStep(maxKw), top = Math.ceil(maxKw / step - 1e-9) * step;
    const digits = step < 1 ? 2 : step % 1 ? 1 : 0;
    const pad = { l: 96, r: 16, t: 24, b: 52 }, pw = W - pad.l - pad.r, ph = H - pad.t - pad.b;
    const x = (ts) => pad.l + Math.max(0, Math.min(24, (ts - day0) / 36e5)) / 24 * pw;
    const y = (w) => pad.t + ph - Math.max(0, Math.min(1, w / 1000 / top)) * ph;
    const base = pad.t + ph;

    const svg = el('svg', { class: 'chart-svg', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': L().chart_title });
    for (let v = 0; v <= top + 1e-9; v += step) {
      svg.appendChild(el('line', { class: v ? 'grid' : 'axis', x1: pad.l, x2: W - pad.r, y1: y(v * 1000), y2: y(v * 1000) }));
      svg.appendChild(el('text', { x: pad.l - 14, y: y(v * 1000) + 12, 'text-anchor': 'end' }, num(v, digits)));
    }
    for (let h = 0; h <= 24; h += 3) {
      svg.appendChild(el('text', { x: x(day0 + h * 36e5), y: H - 8, 'text-anchor': h === 0 ? 'start' : h === 24 ? 'end' : 'middle' }, String(h)));
    }
    const path = (run) => run.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join('');
    pv.forEach((run) => {
      if (run.length === 1) { svg.appendChild(el('circle', { class: 'pv-dot', cx: x(run[0][0]), cy: y(run[0][1]), r: 5 })); return; }
      const line = path(run);
      svg.appendChild(el('path', { class: 'pv-area', d: line + 'L' + x(run[run.length - 1][0]).toFixed(1) + ',' + base + 'L' + x(run[0][0]).toFixed(1) + ',' + base + 'Z' }));
      svg.appendChild(el('path', { class: 'pv-line', d: line }));
    });
    load.forEach((run) => {
      svg.appendChild(run.length === 1 ? el('circle', { class: 'load-dot', cx: x(run[0][0]), cy: y(run[0][1]), r: 5 }) : el('path', { class: 'load-line', d: path(run) }));
    });
    if ((pv.length || load.length) && isNum(d.generated_at) && d.generated_at > day0 && d.generated_at < day0 + 864e5) {
      const nx = x(d.generated_at);
      svg.appendChild(el('line', { class: 'now', x1: nx, x2: nx, y1: pad.t, y2: base }));
    }
    if (!pv.length && !load.length) {
      svg.appendChild(el('text', { class: 'empty', x: pad.l + pw / 2, y: pad.t + ph / 2, 'text-anchor': 'middle' }, L().no_data));
    }
    box.replaceChildren(svg);
  }

  function render() {
    if (!snap) return;
    [renderHeader, renderTiles, renderProgress, renderChart, renderFooter].forEach((f) => {
      try { f(snap); } catch (e) { console.error('display: ' + f.name + ' failed', e); }
    });
  }

  function renderConnection() {
    const c = $('#connection');
    c.dataset.state = lost ? 'lost' : 'ok';
    c.hidden = !lost;
    setText(c, lost ? L().lost(snap && isNum(snap.generated_at) ? fmtTime(snap.generated_at, siteTz()) : '') : '');
  }

  // ---- clock, language, scaling -----------------------------------------------------------
  function tick() {  // the site's wall clock, whatever zone the lobby PC is set to
    const now = Date.now();
    setText($('#clock'), fmtTime(now, siteTz()));
    const f = L().date;
    let fmt;
    try { fmt = new Intl.DateTimeFormat(f.locale, Object.assign({ timeZone: siteTz() }, f.opts)); }
    catch (e) { fmt = new Intl.DateTimeFormat(f.locale, f.opts); }  // unknown tz: screen time
    setText($('#date'), fmt.format(now));
  }
  function fit() {
    const s = Math.min(innerWidth / 1920, innerHeight / 1080);
    $('#stage').style.transform = 'translate(' + (innerWidth - 1920 * s) / 2 + 'px,' + (innerHeight - 1080 * s) / 2 + 'px) scale(' + s + ')';
  }
  function switchLang() {
    lang = lang === 'en' ? 'zh-TW' : 'en';
    renderStatic(); render(); renderConnection();
  }

  // ---- polling ----------------------------------------------------------------------------
  const URL_ = '/display/data' + (SITE ? '?site=' + encodeURIComponent(SITE) : '');
  async function poll() {
    let wait = POLL_MS;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), Math.max(3000, POLL_MS));
    try {
      const r = await fetch(URL_, { cache: 'no-store', signal: ctl.signal, headers: { Accept: 'application/json' } });
      if (!r.ok) {
        const ra = parseInt(r.headers.get('Retry-After'), 10);  // be gentle when told to (429/503)
        if (ra > 0) wait = Math.max(wait, Math.min(ra * 1000, 60000));
        throw new Error('HTTP ' + r.status);
      }
      const d = await r.json();
      if (!d || typeof d !== 'object' || Array.isArray(d) || !isNum(d.generated_at)) throw new Error('bad snapshot');
      snap = d; lost = false;
      render();
      document.body.dataset.lastUpdate = String(d.generated_at);
    } catch (e) {
      lost = true;
    } finally {
      clearTimeout(timer);
      renderConnection();
      setTimeout(poll, wait);
    }
  }

  fit();
  addEventListener('resize', () => { fit(); render(); });
  renderStatic();
  setInterval(tick, 1000);
  if (!FIXED_LANG) setInterval(switchLang, LANG_MS);
  poll();
})();
