// User lookup through the admin API. Values from the API are shown with textContent only,
// so nothing a user sent can run in the operator's browser.
const form = document.getElementById('lookup');
const status = document.getElementById('result-status');
const result = document.getElementById('result');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = document.getElementById('token').value.trim();
  const user = document.getElementById('user').value.trim();
  result.textContent = '';
  status.textContent = 'looking up…';
  try {
    const response = await fetch(`/admin/v1/users/${encodeURIComponent(user)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    const body = await response.json();
    if (!response.ok) {
      status.textContent = `${response.status}: ${body.message}`;
      return;
    }
    status.textContent = `found, ${body.events.length} events`;
    result.textContent = JSON.stringify(body, null, 2);
  } catch (error) {
    status.textContent = `the collector did not answer: ${error.message}`;
  }
});
