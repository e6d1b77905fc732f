// Composition root. Until the engine lands it only checks for cluster configuration.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export async function runAgent(_argv: string[]): Promise<number> {
  const inCluster = Boolean(process.env.KUBERNETES_SERVICE_HOST);
  const kubeconfig = process.env.KUBECONFIG ?? join(homedir(), '.kube', 'config');
  if (!inCluster && !existsSync(kubeconfig)) {
    process.stderr.write('resizelet: no cluster configuration found, see deploy/ or run the demo (npm run demo)\n');
    return 1;
  }
  process.stderr.write('resizelet: the resize engine is not built yet\n');
  return 1;
}
