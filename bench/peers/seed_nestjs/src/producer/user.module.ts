// The seed's producer/src/user (controller, service, repository, DTOs), one file here.
import {
  BadRequestException,
  Body,
  Controller,
  Get,
  Injectable,
  Module,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
} from '@nestjs/common';
import { Exclude, Expose, plainToInstance } from 'class-transformer';
import { IsEmail, IsNotEmpty, IsString } from 'class-validator';
import { Database } from '../lib/database';

export class CreateUserRequest {
  @IsEmail()
  @IsNotEmpty()
  email: string;

  @IsString()
  @IsNotEmpty()
  name: string;
}

@Exclude()
export class CreateUserResponse {
  @Expose()
  id: number;
}

// As in the seed: it exposes `userId`, which a user row does not have, so GET /user/:id answers
// only the email and the name.
@Exclude()
export class GetUserResponse {
  @Expose()
  userId: number;

  @Expose()
  email: string;

  @Expose()
  name: string;
}

const USER_COLUMNS =
  '"public"."User"."id", "public"."User"."name", "public"."User"."email", ' +
  '"public"."User"."createdAt", "public"."User"."updatedAt", "public"."User"."deletedAt"';

@Injectable()
export class UserRepository {
  constructor(private readonly db: Database) {}

  async createUser(name: string, email: string) {
    const rows = await this.db.query(
      `INSERT INTO "public"."User" ("name","email","updatedAt") VALUES ($1,$2,$3) RETURNING ${USER_COLUMNS}`,
      [name, email, new Date()],
    );
    return rows[0];
  }

  async findUserByEmail(email: string) {
    const rows = await this.db.query(
      `SELECT ${USER_COLUMNS} FROM "public"."User" WHERE "public"."User"."email" = $1 LIMIT $2 OFFSET $3`,
      [email, 1, 0],
    );
    return rows[0] ?? null;
  }

  async findUserById(userId: number) {
    const rows = await this.db.query(
      `SELECT ${USER_COLUMNS} FROM "public"."User" WHERE "public"."User"."id" = $1 LIMIT $2 OFFSET $3`,
      [userId, 1, 0],
    );
    return rows[0] ?? null;
  }
}

@Injectable()
export class UserService {
  constructor(private readonly userRepository: UserRepository) {}

  async createUser({ name, email }: CreateUserRequest) {
    const user = await this.userRepository.findUserByEmail(email);
    if (user) throw new BadRequestException('user already registered');
    const { id } = await this.userRepository.createUser(name, email);
    return { id };
  }

  async getUserInfo(userId: number) {
    const user = await this.userRepository.findUserById(userId);
    if (!user) throw new NotFoundException('no such user');
    return user;
  }
}

@Controller('user')
export class UserController {
  constructor(private readonly userService: UserService) {}

  @Post()
  async createUser(@Body() params: CreateUserRequest) {
    return plainToInstance(CreateUserResponse, await this.userService.createUser(params));
  }

  @Get(':userId')
  async getUserInfo(@Param('userId', ParseIntPipe) userId: number) {
    return plainToInstance(GetUserResponse, await this.userService.getUserInfo(userId));
  }
}

@Module({
  providers: [UserService, UserRepository],
  controllers: [UserController],
})
export class UserModule {}
