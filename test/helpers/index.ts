export * from './ports.js';
export * from './nats-server.js';
export * from './etcd.js';
export * from './fake-cc.js';
export * from './tls.js';
