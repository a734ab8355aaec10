import 'reflect-metadata';
import { runApp } from '@app/common/bootstrap';
import { loadLoaderConfig } from '@app/common/config';
import { LoaderModule } from './loader.module';

void runApp({ name: 'loader', loadConfig: loadLoaderConfig, module: (config) => LoaderModule.forRoot(config) });
