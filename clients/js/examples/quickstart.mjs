import { HeraldClient } from '@herald/client';

const client = new HeraldClient({ url: 'http://127.0.0.1:8080' });
client.on('connect', ({ transport }) => console.log('connected over', transport));
const sub = client.subscribe('orders.*', (m) => console.log(m.topic, m.seq, m.data));
await sub.ready;
const { seq } = await client.publish('orders.eu', { item: 'book' });
console.log('published as seq', seq);
setTimeout(() => client.close(), 500);
