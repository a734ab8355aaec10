import 'reflect-metadata';
import { runApp } from '@app/common/bootstrap';
import { loadSchedulerConfig } from '@app/common/config';
import { SchedulerModule } from './scheduler.module';

void runApp({ name: 'scheduler', loadConfig: loadSchedulerConfig, module: (config) => SchedulerModule.forRoot(config) });
