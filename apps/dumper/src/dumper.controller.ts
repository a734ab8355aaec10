import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, Payload } from '@nestjs/microservices';
import { parseTriggerPayload, SUBJECTS } from '@app/common/contract';
import { JetStreamContext, TerminateMessage } from '@app/common/messaging';
import { type DumpOutcome, DumperService } from './dumper.service';

@Controller()
export class DumperController {
  constructor(private readonly dumper: DumperService) {}

  /** Acked (by the transport) only after snapshot.ready or snapshot.failed has been stored. */
  @EventPattern<string>(SUBJECTS.trigger)
  async onTrigger(@Payload() body: unknown, @Ctx() context: JetStreamContext): Promise<void> {
    // An InvalidMessageError terminates the message (TerminateMessageFilter). "Today" is the day
    // the trigger was published, even if it is delivered again later.
    const message = context.getMessage();
    const date = this.dumper.resolveDate(parseTriggerPayload(body), message.time);
    const trigger = { seq: message.seq, delivery: context.getDeliveryCount() };
    let outcome: DumpOutcome;
    try {
      outcome = await this.dumper.dump(date, trigger, context.getShutdownSignal());
    } catch (error) {
      // Unexpected (e.g. the outcome could not be published), or the app is stopping: redelivered,
      // unless this was the last try. Then nobody else would say it failed: report it now.
      if (!context.isLastDelivery()) throw error;
      const last = context.lastDeliveryFailure(error, `dump of ${date}`);
      const failure = this.dumper.describe(last.error);
      // Attempts of this delivery; the run history adds the earlier deliveries'.
      await this.dumper.reportFailure(date, trigger, failure, last.attempts, context.getShutdownSignal());
      throw new TerminateMessage(`dump of ${date} failed on the last delivery: ${failure.error}`);
    }
    if (outcome.status === 'failed') throw new TerminateMessage(`dump of ${date} failed: ${outcome.error}`);
  }
}
