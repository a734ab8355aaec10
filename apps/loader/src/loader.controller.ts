import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, Payload } from '@nestjs/microservices';
import { JetStreamContext, parseSnapshotReadyPayload, SUBJECTS, TerminateMessage } from '@app/common';
import { LoaderService } from './loader.service';

@Controller()
export class LoaderController {
  constructor(private readonly loader: LoaderService) {}

  /** Acked (by the transport) only after the load committed and snapshot.loaded was stored. */
  @EventPattern<string>(SUBJECTS.snapshotReady)
  async onSnapshotReady(@Payload() body: unknown, @Ctx() context: JetStreamContext): Promise<void> {
    // An InvalidMessageError from here on terminates the message (TerminateMessageFilter).
    const snapshot = parseSnapshotReadyPayload(body);
    const outcome = await this.loader.load(snapshot, context.getShutdownSignal());
    if (outcome.status === 'failed') throw new TerminateMessage(`load of ${snapshot.snapshotId} failed: ${outcome.error}`);
  }
}
