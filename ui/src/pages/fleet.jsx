import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { isDeleting, list, matchesSelector, nodeOf, nodeState, STATES } from '../fleet.js';
import { bytes, cores, duration, quantity } from '../quantity.js';
import { Bar, Labels, useQueryParam, useTick } from './common.jsx';

/** More tiles than this slow a tablet down; a filter narrows the rest. */
const MOST_TILES = 500;

/** When each device was last heard from (GET /api/v1/node-heartbeats), every 2 s. */
function useHeartbeats() {
  const [heard, setHeard] = useState({ at: Date.now(), nodes: new Map() });
  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      try {
        const answer = await api('GET', '/api/v1/node-heartbeats');
        if (!stopped) setHeard({ at: Date.now(), nodes: new Map(answer.items.map((i) => [i.node, i.secondsAgo])) });
      } catch {
        // The watch's indicator says the server is gone; nothing to add.
      }
    };
    poll();
    const timer = setInterval(poll, 2000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);
  return heard;
}

export function Fleet({ fleet, query }) {
  useTick(1000);
  const heard = useHeartbeats();
  const [selector, setSelector] = useQueryParam(query, 'selector');
  const [only, setOnly] = useQueryParam(query, 'state');
  const nodes = list(fleet.objects, 'Node').sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const replicas = new Map();
  for (const pod of list(fleet.objects, 'Pod')) {
    if (isDeleting(pod) || ['Succeeded', 'Failed'].includes(pod.status?.phase)) continue;
    const node = nodeOf(pod);
    if (node) replicas.set(node, (replicas.get(node) || 0) + 1);
  }
  const selected = nodes.filter((n) => matchesSelector(n.metadata.labels, selector));
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const node of selected) counts[nodeState(node).state]++;
  const shown = selected.filter((n) => !only || nodeState(n).state === only);
  return (
    <section>
      <div class="toolbar">
        <h2>Fleet</h2>
        <div class="counts" role="group" aria-label="devices per state">
          {STATES.filter((s) => counts[s] > 0 || s === 'online' || s === 'unreachable').map((s) => (
            <button
              class={`count ${s} ${only === s ? 'chosen' : ''}`}
              data-count={s}
              onClick={() => setOnly(only === s ? '' : s)}
              title={only === s ? 'show every state' : `only ${s.replace('-', ' ')}`}
            >
              <strong>{counts[s]}</strong> {s.replace('-', ' ')}
            </button>
          ))}
        </div>
        <input
          class="filter"
          type="search"
          aria-label="label selector"
          placeholder="filter by label: site=berlin,line=3"
          value={selector}
          onInput={(e) => setSelector(e.currentTarget.value)}
        />
      </div>
      {nodes.length === 0 && (
        <p class="hint">No device has joined yet: `flotilla node token create` prints the command to run on one.</p>
      )}
      <div class="tiles">
        {shown.slice(0, MOST_TILES).map((node) => (
          <NodeTile node={node} replicas={replicas.get(node.metadata.name) || 0} heard={heard} />
        ))}
      </div>
      {shown.length > MOST_TILES && (
        <p class="hint">
          Showing {MOST_TILES} of {shown.length} devices: filter by label or state to see the others.
        </p>
      )}
    </section>
  );
}

function NodeTile({ node, replicas, heard }) {
  const status = node.status || {};
  const { state, text, why } = nodeState(node);
  const allocatable = status.allocatable || status.capacity || {};
  const cpuTotal = quantity(allocatable.cpu);
  const memoryTotal = quantity(allocatable.memory);
  const cpuUsed = (status.usage?.cpuMillis ?? NaN) / 1000;
  const memoryUsed = status.usage?.memoryBytes ?? NaN;
  const secondsAgo = heard.nodes.get(node.metadata.name);
  const lastHeard =
    secondsAgo === undefined ? 'not since the server started' : `${duration(secondsAgo + (Date.now() - heard.at) / 1000)} ago`;
  const cordoned = node.spec?.unschedulable;
  return (
    <article class={`tile ${state}`} data-node={node.metadata.name} data-state={state}>
      <div class="tile-head">
        <a class="name" href={`#/pods?node=${encodeURIComponent(node.metadata.name)}`} title="its pods">
          {node.metadata.name}
        </a>
        <span class={`badge ${state}`} title={why}>
          {text}
        </span>
      </div>
      <div class="facts">
        <span>{status.nodeInfo?.architecture || '?'}</span>
        <span data-replicas={replicas}>
          {replicas} replica{replicas === 1 ? '' : 's'}
        </span>
        {cordoned && <span class="badge not-ready">cordoned</span>}
      </div>
      <Bar label="CPU" used={cpuUsed} total={cpuTotal} text={`${cores(cpuUsed)} / ${cores(cpuTotal)}`} />
      <Bar label="Mem" used={memoryUsed} total={memoryTotal} text={`${bytes(memoryUsed)} / ${bytes(memoryTotal)}`} />
      <Labels labels={node.metadata.labels} />
      <div class="heard">heard {lastHeard}</div>
    </article>
  );
}
