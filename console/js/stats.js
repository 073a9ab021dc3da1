// The chart on the leases page, drawn from /console/stats of the selected
// tenant; the leases page polls it.

import { $, setText, svg } from './dom.js';
import { load } from './api.js';
import { fmtTime, qs } from './format.js';
import { S } from './state.js';

/** Minted and denied per minute as SVG bars, built once and updated in place. The legend is HTML text beside it. */
export const Stats = {
  W: 600, H: 150, L: 34, T: 18, B: 18, N: 30,
  bars: [],
  build() {
    const { W, H, L, B, N } = this;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'stats-title', class: 'chart', 'data-testid': 'stats-chart' });
    root.append(svg('title', { id: 'stats-title' }, 'Tokens minted and denied per minute, last 30 minutes: no data yet.'));
    // A text legend, so colour is never the only cue.
    [['minted', W - 140], ['denied', W - 70]].forEach(([k, x]) => root.append(
      svg('rect', { x, y: 2, width: 9, height: 9, class: `bar-${k}` }), svg('text', { x: x + 13, y: 10, class: 'chart-text' }, k)));
    this.maxLabel = svg('text', { x: L - 6, y: this.T + 8, 'text-anchor': 'end', class: 'chart-text' }, '1');
    root.append(this.maxLabel, svg('text', { x: L - 6, y: H - B, 'text-anchor': 'end', class: 'chart-text' }, '0'),
      svg('text', { x: L, y: H - 3, class: 'chart-text' }, '−30 min'),
      svg('text', { x: W - 2, y: H - 3, 'text-anchor': 'end', class: 'chart-text' }, 'now'),
      svg('line', { x1: L, x2: W, y1: H - B, y2: H - B, class: 'chart-axis' }));
    const slot = (W - L) / N;
    for (let i = 0; i < N; i += 1) {
      this.bars.push(['minted', 'denied'].map((cls, j) => {
        const r = svg('rect', { x: L + i * slot + 1 + j * (slot / 2 - 1), y: H - B, width: slot / 2 - 2, height: 0, class: `bar-${cls}` });
        r.append(svg('title'));
        root.append(r);
        return r;
      }));
    }
    $('#stats-box').append(root);
  },
  async refresh() {
    if (!S.tenant) return;
    const d = await load(`/console/stats${qs({ tenant: S.tenant })}`);
    if (d) this.draw(d.minutes || []);
  },
  draw(minutes) {
    const { H, T, B, N } = this;
    const m = minutes.slice(-N), offset = N - m.length;
    const max = Math.max(1, ...m.map((x) => Math.max(x.minted || 0, x.denied || 0)));
    this.maxLabel.textContent = String(max);
    const sum = { minted: 0, denied: 0 };
    this.bars.forEach((pair, i) => {
      const row = m[i - offset];
      ['minted', 'denied'].forEach((k, j) => {
        const v = row ? row[k] || 0 : 0, h = Math.round((v / max) * (H - T - B));
        pair[j].setAttribute('y', String(H - B - h));
        pair[j].setAttribute('height', String(h));
        pair[j].firstChild.textContent = row ? `${fmtTime(row.minute).slice(11, 16)}: ${v} ${k}` : '';
        sum[k] += v;
      });
    });
    const text = `Last 30 minutes: ${sum.minted} minted, ${sum.denied} denied; busiest minute ${max}.`;
    $('#stats-title').textContent = `Tokens per minute. ${text}`;
    setText($('#stats-summary'), text);
  },
};
