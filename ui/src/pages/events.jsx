import { useState } from 'preact/hooks';
import { list } from '../fleet.js';
import { age } from '../quantity.js';
import { Table, useTick } from './common.jsx';

export function Events({ fleet }) {
  useTick(5000);
  const [warningsOnly, setWarningsOnly] = useState(false);
  const events = list(fleet.objects, 'Event')
    .filter((e) => !warningsOnly || e.type === 'Warning')
    .sort((a, b) => (b.lastTimestamp || '').localeCompare(a.lastTimestamp || ''));
  return (
    <section>
      <div class="toolbar">
        <h2>Events</h2>
        <label class="check">
          <input type="checkbox" checked={warningsOnly} onChange={(e) => setWarningsOnly(e.currentTarget.checked)} />{' '}
          warnings only
        </label>
      </div>
      {events.length === 0 ? (
        <p class="hint">No events in the last day.</p>
      ) : (
        <Table headers={['Last seen', 'Type', 'Reason', 'Object', 'Message', 'Count']}>
          {events.map((e) => (
            <tr data-event={e.reason}>
              <td>{age(e.lastTimestamp)}</td>
              <td>
                <span class={`badge ${e.type === 'Warning' ? 'warning' : 'normal'}`}>{e.type}</span>
              </td>
              <td>{e.reason}</td>
              <td>
                {e.involvedObject?.kind?.toLowerCase()}/{e.involvedObject?.name}
              </td>
              <td class="message">{e.message}</td>
              <td>{e.count}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}
