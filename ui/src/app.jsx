import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, forgetToken, setToken, token } from './api.js';
import { useFleet } from './fleet.js';
import { Fleet } from './pages/fleet.jsx';
import { Workloads } from './pages/workloads.jsx';
import { Pods } from './pages/pods.jsx';
import { Events } from './pages/events.jsx';
import { Apply } from './pages/apply.jsx';

const PAGES = [
  ['fleet', 'Fleet', Fleet],
  ['workloads', 'Workloads', Workloads],
  ['pods', 'Pods', Pods],
  ['events', 'Events', Events],
  ['apply', 'Apply', Apply],
];

/** `#/pods?node=a` -> ['pods', {node: 'a'}] */
function route() {
  const [page, query] = location.hash.replace(/^#\/?/, '').split('?');
  return [PAGES.some(([id]) => id === page) ? page : 'fleet', Object.fromEntries(new URLSearchParams(query || ''))];
}

export function App() {
  const [loggedIn, setLoggedIn] = useState(Boolean(token()));
  const [why, setWhy] = useState('');
  if (!loggedIn) {
    return (
      <Login
        why={why}
        onLogin={() => {
          setWhy('');
          setLoggedIn(true);
        }}
      />
    );
  }
  return (
    <Dashboard
      onLogout={(reason) => {
        forgetToken();
        setWhy(reason || '');
        setLoggedIn(false);
      }}
    />
  );
}

function Login({ why, onLogin }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(why);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setToken(value.trim());
    try {
      // The route table needs the token: a cheap check that it is right.
      await api('GET', '/api/v1');
      onLogin();
    } catch (e) {
      forgetToken();
      setError(
        e instanceof ApiError && e.status === 401
          ? 'That token is not the server\'s API token (it is in the file "token" of the server\'s data directory).'
          : `The server did not answer: ${e.message}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} class="card">
        <h1>Flotilla</h1>
        <label for="token">API token</label>
        <input
          id="token"
          type="password"
          autocomplete="current-password"
          value={value}
          onInput={(e) => setValue(e.currentTarget.value)}
          placeholder="the contents of <data dir>/token"
          required
        />
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy || !value.trim()}>
          {busy ? 'Checking…' : 'Log in'}
        </button>
        <p class="hint">Kept in this tab only (session storage), never in a link.</p>
      </form>
    </main>
  );
}

function Dashboard({ onLogout }) {
  const [[page, query], setRoute] = useState(route());
  useEffect(() => {
    const follow = () => setRoute(route());
    addEventListener('hashchange', follow);
    return () => removeEventListener('hashchange', follow);
  }, []);
  const fleet = useFleet((message) => onLogout(`The server refused the token: ${message}`));
  const Page = PAGES.find(([id]) => id === page)[2];
  return (
    <div class="shell">
      <header>
        <span class="brand">Flotilla</span>
        <nav>
          {PAGES.map(([id, title]) => (
            <a href={`#/${id}`} class={id === page ? 'current' : ''} aria-current={id === page ? 'page' : undefined}>
              {title}
            </a>
          ))}
        </nav>
        <span class={`connection ${fleet.connection}`} title={fleet.error} data-connection={fleet.connection}>
          {fleet.connection === 'live' ? '● live' : fleet.connection === 'lost' ? '● reconnecting' : '● connecting'}
        </span>
        <button class="quiet" onClick={() => onLogout('')}>
          Log out
        </button>
      </header>
      <main>
        {fleet.version === 0 ? <p class="hint">Loading the fleet…</p> : <Page fleet={fleet} query={query} />}
      </main>
    </div>
  );
}
