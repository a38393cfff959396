// Data Settings of the selected environment: the retention rule with its histogram and
// what it would delete now, the identity-verification secret, the write key, the
// environments themselves, and purging all user data.
import { h, plural, replace, time } from './dom.js';
import { histogram } from './histogram.js';
import { card, confirmDialog, errorBox, loading, notice, receipt, table } from './ui.js';

// A message to show once after the page is drawn again (a new environment, a rename).
let flash = null;

/** Renders the page into `view`. */
export function renderSettings(view, ctx) {
  const shown = flash;
  flash = null;
  const retention = h('section', { class: 'card', id: 'retention' });
  const reloadRetention = () => renderRetention(retention, ctx);

  replace(view,
    h('h1', {}, 'Data Settings'),
    h('p', { class: 'muted' }, 'Environment ', h('strong', {}, ctx.environment.name), ' · id ',
      h('code', {}, ctx.environment.id)),
    shown ? notice(shown) : null,
    retention,
    h('div', { class: 'grid' }, identityCard(ctx), writeKeyCard(ctx)),
    environmentsCard(ctx),
    purgeCard(ctx, reloadRetention));
  reloadRetention();
}

// Retention ---------------------------------------------------------------------------

function daysValue(text) {
  if (text.trim() === '') return null;
  const days = Number(text);
  return Number.isInteger(days) && days >= 1 ? days : NaN;
}

/** The segment filter that selects what `rule` deletes, to count an unsaved rule. */
function ruleFilter(rule) {
  const parts = [];
  if (rule.days != null) parts.push({ lastSeenDaysAgo: { atLeast: rule.days } });
  if (rule.daysWithoutResponse != null) {
    parts.push({ all: [{ lastSeenDaysAgo: { atLeast: rule.daysWithoutResponse } }, { responded: false }] });
  }
  return { any: parts };
}

async function renderRetention(container, ctx, message) {
  const title = h('h2', {}, 'Retention');
  replace(container, title, loading());
  let answer;
  try {
    answer = await ctx.api.retention(ctx.environment.id);
  } catch (error) {
    replace(container, title, errorBox(error, 'Could not load the retention rule'));
    return;
  }
  const { rule, preview } = answer;

  const days = h('input', {
    id: 'retention-days', type: 'number', min: 1, value: rule.days ?? '', placeholder: 'off',
  });
  const silent = h('input', {
    id: 'retention-silent-days', type: 'number', min: 1, value: rule.daysWithoutResponse ?? '',
    placeholder: 'off',
  });
  const statement = h('p', { id: 'retention-statement', class: 'statement', 'aria-live': 'polite' });
  const figure = h('div', { class: 'figure-slot' });
  const messages = h('div', {}, message ?? null);

  const saved = () => rule.days === (daysValue(days.value)) &&
    rule.daysWithoutResponse === daysValue(silent.value);
  let counting = 0;
  async function update() {
    const draft = { days: daysValue(days.value), daysWithoutResponse: daysValue(silent.value) };
    if (Number.isNaN(draft.days) || Number.isNaN(draft.daysWithoutResponse)) {
      replace(statement, 'A period is a whole number of days, 1 or more; leave it empty for none.');
      return;
    }
    replace(figure, histogram(preview.histogram, draft));
    if (draft.days == null && draft.daysWithoutResponse == null) {
      replace(statement, saved()
        ? `No retention rule: users are kept until they are deleted. ${plural(preview.users, 'user')} stored.`
        : 'Without a rule, nobody is deleted. Save to turn retention off.');
      return;
    }
    if (saved()) {
      replace(statement, 'This rule would delete ',
        h('strong', { id: 'would-delete', data: { count: preview.wouldDelete } }, plural(preview.wouldDelete, 'user')),
        ` of ${preview.users.toLocaleString()} now.`);
      return;
    }
    const mine = ++counting;
    replace(statement, 'Counting…');
    try {
      const { count } = await ctx.api.segmentPreview(ctx.environment.id, ruleFilter(draft));
      if (mine !== counting) return;
      replace(statement, 'Once saved, this rule would delete ',
        h('strong', { id: 'would-delete', data: { count } }, plural(count, 'user')),
        ` of ${preview.users.toLocaleString()} now.`);
    } catch (error) {
      if (mine === counting) replace(statement, errorBox(error, 'Could not count'));
    }
  }
  let timer;
  for (const input of [days, silent]) {
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(update, 250);
    });
  }

  const form = h('form', { class: 'retention-form', id: 'retention-form' },
    h('label', { for: 'retention-days' }, 'Delete users inactive for'),
    h('span', { class: 'inline' }, days, ' days'),
    h('label', { for: 'retention-silent-days' }, 'Delete users who never answered a survey after'),
    h('span', { class: 'inline' }, silent, ' days'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save rule'),
      rule.days != null || rule.daysWithoutResponse != null
        ? h('button', { type: 'button', class: 'secondary', id: 'sweep-now', on: { click: sweep } }, 'Apply now…')
        : null));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const draft = { days: daysValue(days.value), daysWithoutResponse: daysValue(silent.value) };
    if (Number.isNaN(draft.days) || Number.isNaN(draft.daysWithoutResponse)) {
      replace(messages, errorBox(new Error('a period is a whole number of days, 1 or more'), 'Not saved'));
      return;
    }
    try {
      await ctx.api.setRetention(ctx.environment.id, draft);
      renderRetention(container, ctx, notice('Saved. The sweeper applies the rule at its next run.'));
    } catch (error) {
      replace(messages, errorBox(error, 'Not saved'));
    }
  });

  async function sweep() {
    const ok = await confirmDialog({
      title: 'Apply the rule now?',
      confirmLabel: 'Delete inactive users now',
      body: [h('p', {}, `The saved rule deletes ${plural(preview.wouldDelete, 'user')} of ` +
        `“${ctx.environment.name}” now, with all their records.`),
      h('p', {}, h('strong', {}, 'This cannot be undone.'))],
    });
    if (!ok) return;
    try {
      const run = await ctx.api.sweep(ctx.environment.id);
      renderRetention(container, ctx, h('div', {}, notice(`Deleted ${plural(run.users, 'user')}.`),
        receipt('Retention run', { ...run, at: new Date().toISOString() })));
    } catch (error) {
      replace(messages, errorBox(error, 'The rule was not applied'));
    }
  }

  replace(container, title, form, statement, figure, messages);
  update();
}

// Identity verification ------------------------------------------------------------------

function identityCard(ctx) {
  const environment = ctx.environment;
  const body = h('div', {});
  const draw = (secret) => {
    const on = environment.identityVerification;
    const turnOn = h('button', { type: 'button', id: 'identity-secret-set' },
      on ? 'Rotate secret…' : 'Turn on');
    turnOn.addEventListener('click', async () => {
      if (on) {
        const ok = await confirmDialog({
          title: 'Rotate the identity secret?',
          confirmLabel: 'Rotate',
          body: h('p', {}, 'The old secret stops working at once: messages with a userId whose ' +
            'hash was made with it are refused until your server uses the new one.'),
        });
        if (!ok) return;
      }
      try {
        const { identitySecret } = await ctx.api.setIdentitySecret(environment.id);
        environment.identityVerification = true;
        draw(identitySecret);
      } catch (error) {
        body.append(errorBox(error, 'The secret was not set'));
      }
    });
    const turnOff = on
      ? h('button', { type: 'button', class: 'secondary', id: 'identity-secret-remove' }, 'Turn off…')
      : null;
    turnOff?.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: 'Turn identity verification off?',
        confirmLabel: 'Turn off',
        body: h('p', {}, 'Any page could then send messages under any user id.'),
      });
      if (!ok) return;
      try {
        await ctx.api.removeIdentitySecret(environment.id);
        environment.identityVerification = false;
        draw(null);
      } catch (error) {
        body.append(errorBox(error, 'Verification was not turned off'));
      }
    });

    replace(body,
      h('p', { id: 'identity-status' }, on
        ? 'On: every message with a userId must carry context.userHash, the HMAC-SHA256 of ' +
          'the user id under the secret, computed by your server.'
        : 'Off: any page may send messages under any user id.'),
      secret
        ? h('div', { class: 'secret', role: 'status' },
          h('p', {}, h('strong', {}, 'Copy the secret now: it is shown this once.')),
          h('code', { id: 'identity-secret' }, secret))
        : null,
      h('div', { class: 'actions' }, turnOn, turnOff));
  };
  draw(null);
  return card('Identity verification', body);
}

// Write key ------------------------------------------------------------------------------

function writeKeyCard(ctx) {
  const environment = ctx.environment;
  const body = h('div', {});
  const draw = (message) => {
    const rotate = h('button', { type: 'button', id: 'rotate-write-key' }, 'Rotate…');
    rotate.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: 'Rotate the write key?',
        confirmLabel: 'Rotate',
        body: h('p', {}, 'The current key stops working at once: every site and server that ' +
          'sends with it needs the new one.'),
      });
      if (!ok) return;
      try {
        const { writeKey } = await ctx.api.rotateWriteKey(environment.id);
        environment.writeKeys = [writeKey];
        draw(notice('Rotated. The old key no longer works.'));
      } catch (error) {
        body.append(errorBox(error, 'The key was not rotated'));
      }
    });
    replace(body,
      h('p', {}, 'Sites and servers name this environment with its write key.'),
      h('ul', { class: 'plain', id: 'write-keys' },
        environment.writeKeys.map((key) => h('li', {}, h('code', {}, key)))),
      message ?? null,
      h('div', { class: 'actions' }, rotate));
  };
  draw();
  return card('Write key', body);
}

// Environments ---------------------------------------------------------------------------

function environmentsCard(ctx) {
  const messages = h('div', {});
  const rename = h('input', { id: 'rename-environment', value: ctx.environment.name, required: true, maxlength: 100 });
  const renameForm = h('form', { class: 'inline-form', id: 'rename-form' },
    h('label', { for: 'rename-environment' }, `Rename “${ctx.environment.name}”`),
    rename, h('button', { type: 'submit' }, 'Rename'));
  renameForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const updated = await ctx.api.renameEnvironment(ctx.environment.id, rename.value.trim());
      flash = `Renamed to “${updated.name}”.`;
      await ctx.refreshEnvironments();
    } catch (error) {
      replace(messages, errorBox(error, 'Not renamed'));
    }
  });

  const create = h('input', { id: 'new-environment', required: true, maxlength: 100, placeholder: 'e.g. staging' });
  const createForm = h('form', { class: 'inline-form', id: 'create-form' },
    h('label', { for: 'new-environment' }, 'New environment'),
    create, h('button', { type: 'submit' }, 'Create'));
  createForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const created = await ctx.api.createEnvironment(create.value.trim());
      flash = `Created “${created.name}”; its write key is ${created.writeKeys[0]}.`;
      await ctx.refreshEnvironments(created.id);
    } catch (error) {
      replace(messages, errorBox(error, 'Not created'));
    }
  });

  return card('Environments',
    table(['Name', 'Id', 'Created', 'Identity verification'], ctx.environments.map((environment) => [
      environment.id === ctx.environment.id
        ? h('strong', {}, environment.name, ' (selected)')
        : environment.name,
      h('code', {}, environment.id),
      time(environment.createdAt),
      environment.identityVerification ? 'on' : 'off',
    ]), { id: 'environments' }),
    renameForm, createForm, messages);
}

// Purge ----------------------------------------------------------------------------------

function purgeCard(ctx, reloadRetention) {
  const environment = ctx.environment;
  const result = h('div', { 'aria-live': 'polite' });
  const purge = h('button', { type: 'button', class: 'danger', id: 'purge' }, 'Purge all user data…');
  purge.addEventListener('click', async () => {
    const ok = await confirmDialog({
      title: `Purge all user data of “${environment.name}”?`,
      confirmLabel: 'Purge everything',
      typed: environment.name,
      body: [
        h('p', {}, 'Every user of this environment goes at once, with all their traits, ' +
          'events, survey responses and consent records. The environment, its keys and ' +
          'settings stay.'),
        h('p', {}, 'No tombstones are kept: batches that browsers retry afterwards are ' +
          'stored anew.'),
        h('p', {}, h('strong', {}, 'This cannot be undone.')),
      ],
    });
    if (!ok) return;
    replace(result, loading('Purging…'));
    try {
      const answer = await ctx.api.purge(environment.id, environment.name);
      replace(result, h('div', { id: 'purge-receipt' }, receipt('Purged', answer)));
      reloadRetention();
    } catch (error) {
      replace(result, errorBox(error, 'Nothing was purged'));
    }
  });
  return h('section', { class: 'card danger-zone' },
    h('h2', {}, 'Purge all user data'),
    h('p', {}, `Deletes every user of “${environment.name}” and everything stored about them. ` +
      'You will be asked to type the environment’s name.'),
    h('div', { class: 'actions' }, purge),
    result);
}
