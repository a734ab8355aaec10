import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, Payload } from '@nestjs/microservices';
import { InvalidMessageError, parseSnapshotReadyPayload, SUBJECTS } from '@app/common/contract';
import { JetStreamContext, TerminateMessage } from '@app/common/messaging';
import { errorMessage } from '@app/common/observability';
import { type LoadOutcome, LoaderService } from './loader.service';

@Controller()
export class LoaderController {
  constructor(private readonly loader: LoaderService) {}

  /** Acked (by the transport) only after the load committed and snapshot.loaded was stored. */
  @EventPattern<string>(SUBJECTS.snapshotReady)
  async onSnapshotReady(@Payload() body: unknown, @Ctx() context: JetStreamContext): Promise<void> {
    await this.handle(body, context, false);
  }

  /** A reload asked for by hand: loads the snapshot again even if the ledger has it or a newer one. */
  @EventPattern<string>(SUBJECTS.reload)
  async onReload(@Payload() body: unknown, @Ctx() context: JetStreamContext): Promise<void> {
    await this.handle(body, context, true);
  }

  private async handle(body: unknown, context: JetStreamContext, force: boolean): Promise<void> {
    // An InvalidMessageError from here on terminates the message (TerminateMessageFilter).
    const snapshot = parseSnapshotReadyPayload(body);
    const origin = { force, reloadSequence: force ? context.getMessage().seq : undefined, delivery: context.getDeliveryCount() };
    let outcome: LoadOutcome;
    try {
      outcome = await this.loader.load(snapshot, context.getShutdownSignal(), origin);
    } catch (error) {
      // Unexpected (e.g. the outcome could not be published), or the app is stopping: redelivered,
      // unless this was the last try. Then nobody else would say it failed: report it now.
      if (error instanceof InvalidMessageError || !context.isLastDelivery()) throw error;
      // The load may have committed with only its announcement lost (the broker was out past the
      // publish's retries): the ledger says so, and it is announced, never reported failed.
      let committed: LoadOutcome | undefined;
      try {
        committed = await this.loader.announceCommitted(snapshot, origin, context.getShutdownSignal());
      } catch (announceError) {
        throw new TerminateMessage(`${snapshot.snapshotId} is loaded (ledger), but snapshot.loaded could not be published on the last delivery: ${errorMessage(announceError)}`);
      }
      if (committed) return;
      // Attempts of this delivery; the run history adds the earlier deliveries'.
      const last = context.lastDeliveryFailure(error, `load of ${snapshot.snapshotId}`);
      const failure = await this.loader.reportFailure(snapshot, last.error, last.attempts, origin, context.getShutdownSignal());
      throw new TerminateMessage(`load of ${snapshot.snapshotId} failed on the last delivery: ${failure.error}`);
    }
    if (outcome.status === 'failed') throw new TerminateMessage(`load of ${snapshot.snapshotId} failed: ${outcome.error}`);
  }
}
