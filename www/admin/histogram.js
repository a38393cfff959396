// The retention histogram: users by days since last seen, one bar per bucket the API
// reports, with the rule's cut-offs drawn as vertical lines. Plain elements sized through
// the CSSOM (`style.setProperty`), which the console's CSP allows, unlike style attributes.
import { h } from './dom.js';

function bucketLabel(bucket) {
  return bucket.toDays === null || bucket.toDays === undefined
    ? `${bucket.fromDays}+`
    : `${bucket.fromDays}–${bucket.toDays}`;
}

/** Where `days` falls along the axis, from 0 to 1, with the buckets evenly spaced. */
function position(buckets, days) {
  const index = buckets.findIndex((b) => b.toDays === null || b.toDays === undefined || days < b.toDays);
  const bucket = buckets[index];
  const span = bucket.toDays == null ? Math.max(bucket.fromDays, 1) : bucket.toDays - bucket.fromDays;
  const within = Math.min(Math.max((days - bucket.fromDays) / span, 0), 0.95);
  return (index + within) / buckets.length;
}

/** Whether users of `bucket` are past the cut-off `days`: all, some or none of them. */
function dueness(bucket, days) {
  if (days == null) return null;
  if (bucket.fromDays >= days) return 'due';
  if (bucket.toDays == null || bucket.toDays > days) return 'partly-due';
  return null;
}

/**
 * The histogram figure. `rule` holds the cut-offs to draw (`days`,
 * `daysWithoutResponse`; either may be null).
 */
export function histogram(buckets, rule) {
  const most = Math.max(1, ...buckets.map((bucket) => bucket.users));
  const plot = h('div', { class: 'plot' });

  for (const bucket of buckets) {
    const bar = h('div', { class: ['bar', dueness(bucket, rule.days)] });
    bar.style.setProperty('height', `${(bucket.users / most) * 100}%`);
    plot.append(h('div', {
      class: 'column', role: 'img', data: { users: bucket.users },
      'aria-label': `${bucket.users} users last seen ${bucketLabel(bucket)} days ago`,
      title: `${bucket.users} users last seen ${bucketLabel(bucket)} days ago`,
    }, h('span', { class: 'bar-value' }, bucket.users.toLocaleString()), bar));
  }

  const lines = [
    [rule.days, 'cutoff', `${rule.days} days`],
    [rule.daysWithoutResponse, 'cutoff silent', `${rule.daysWithoutResponse} days without a response`],
  ];
  for (const [days, kind, label] of lines) {
    if (days == null || buckets.length === 0) continue;
    const line = h('div', { class: kind, data: { days } }, h('span', {}, label));
    line.style.setProperty('left', `${position(buckets, days) * 100}%`);
    plot.append(line);
  }

  return h('figure', { class: 'histogram', id: 'retention-histogram' },
    plot,
    h('div', { class: 'axis' }, buckets.map((bucket) => h('span', {}, bucketLabel(bucket)))),
    h('figcaption', {}, 'Users by days since last seen. Users right of the solid line are ' +
      'deleted by the rule; right of the dashed line, those who never answered a survey.'));
}
